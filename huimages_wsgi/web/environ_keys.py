"""The keys one WSGI layer leaves in the environ for another.

The image middleware and the router write them; the instrumentation
(metrics.py) reads them after the answer, so a request is counted as a
cache hit or miss without the layers importing one another.
"""

from __future__ import annotations

#: Set by ImageMiddleware when a request missed the cache (``"miss"``).
CACHE_KEY = "huimages.cache"
#: Set by the router to the name of the service endpoint that answered (``"_api"`` ...).
ROUTE_KEY = "huimages.route"
#: Set by the file responder to the file's size when the webserver sends it (X-Sendfile):
#: the answer itself then has no body and no Content-Length to count.
SENDFILE_BYTES_KEY = "huimages.sendfile_bytes"
