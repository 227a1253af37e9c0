"""The WSGI layer: the image middleware and the one responder for a cached file,
the standalone app (``make_app``) with its endpoints (API, browse pages, health,
metrics), and logs. WebOb's Request and Response are its HTTP vocabulary.

``middleware`` imports none of the endpoints: an application that mounts
``ImageMiddleware`` loads only what serving images needs (an import-linter
contract in pyproject.toml holds this)."""
