# Varnish in front of huimages-wsgi (Varnish 7.1 with vmod-xkey from varnish-modules;
# tested with Debian 12's varnish and varnish-modules: tests/system/test_varnish.py).
#
# It caches image answers as the webserver in front of the app gives them (one
# year, immutable), keyed by the canonical URL, and drops every size, format
# and name of an image at once when the app's follower asks (HUIMAGES_PURGE=
# xkey+http://127.0.0.1:6081 on every node):
#   1. /<size>/<ID>/<name>.<ext> is the same file as /<size>/<ID>.<ext>: the name
#      is dropped before the lookup (the answer says so in Link rel=canonical),
#      and so is every query parameter but sig, so invented names and stray
#      query strings cannot split the cache or get past it.
#   2. Each image answer is tagged with its image ID (xkey), from the URL, so
#      lighttpd's hits, which carry no surrogate key, are tagged too.
#   3. PURGE / with "xkey-purge: <ID>" from this machine drops them all (BAN /
#      with the same header bans them, for a Varnish without the vmod's purge).
#   4. Errors and anything without a Cache-Control of its own are never kept:
#      an outage or a 404 of a moment cannot outlive it.
#   5. /_health and /_metrics answer this machine only, as in the webservers (which
#      see every request come from Varnish, on this machine: this is the guard). Any
#      other path starting with "_" in any spelling (/%5Fmetrics, /_metric%73, //_x)
#      but /_api and /_browse (which check their token themselves) is refused too.
# Edit the backend below: the webserver (or `huimages serve`) of this node.

vcl 4.1;

import xkey;

backend default {
    .host = "127.0.0.1";
    .port = "8080";
}

acl local {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    unset req.http.huimages-canonical;  # set below only, never by a client
    if (req.method == "PURGE" || req.method == "BAN") {
        if (client.ip !~ local) {
            return (synth(403, "purges come from this machine only"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "say which image in xkey-purge"));
        }
        if (req.method == "BAN") {
            ban("obj.http.xkey == " + req.http.xkey-purge);
            return (synth(200, "banned"));
        }
        set req.http.n-gone = xkey.purge(req.http.xkey-purge);
        return (synth(200, "purged " + req.http.n-gone + " objects"));
    }
    if (client.ip !~ local && req.url ~ "(?i)^/+(_|%5f)"
            && req.url !~ "^/_(api|browse)(/|\?|$)") {
        return (synth(403, "/_health and /_metrics answer this machine only"));
    }
    if (req.url ~ "^/[^/?]+/[A-Z0-9]{34}[/.]") {
        if (req.url ~ "^/[^/?]+/[A-Z0-9]{34}/[^/?]+\.[a-z]+(\?|$)") {
            set req.http.huimages-canonical = regsub(req.url,
                "^/([^/?]+)/([A-Z0-9]{34})/[^/?]+\.([a-z]+).*$", "/\1/\2.\3");
        }
        set req.url = regsub(req.url, "^/([^/?]+)/([A-Z0-9]{34})/[^/?]+\.([a-z]+)", "/\1/\2.\3");
        if (req.url ~ "[?&]sig=[^&]+") {
            set req.url = regsub(req.url, "\?(.*&)?(sig=[^&]+).*$", "?\2");
        } else {
            set req.url = regsub(req.url, "\?.*$", "");
        }
    }
}

sub vcl_hash {
    # a variant is the same with or without its signature, which only lets a miss render
    hash_data(regsub(req.url, "\?.*$", ""));
    if (req.http.host) {
        hash_data(req.http.host);
    } else {
        hash_data(server.ip);
    }
    return (lookup);
}

sub vcl_backend_response {
    if (beresp.status >= 400 || !beresp.http.Cache-Control) {
        # never delivered from the cache: a "hit-for-miss" marker for 10 s, so that
        # requests for the same URL go to the backend at once instead of queueing
        set beresp.ttl = 10s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    if (bereq.url ~ "^/[^/?]+/[A-Z0-9]{34}\.") {
        set beresp.http.xkey = regsub(bereq.url, "^/[^/?]+/([A-Z0-9]{34})\..*$", "\1");
    }
}

sub vcl_deliver {
    if (req.http.huimages-canonical) {
        set resp.http.Link = "<" + req.http.huimages-canonical + ">; rel=" + {""canonical""};
    }
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.xkey;
}
