"""What a node runs besides answering requests: the change-feed follower that keeps
its cache coherent with the shared catalog, and bulk jobs spread over cores and
nodes. Built on the store; the web layer reads the follower's status."""
