"""Running the app: ``huimages serve`` (gunicorn), the FastCGI backend (flup),
PasteDeploy factories, and the lighttpd, Apache and nginx configurations
rendered from ``templates/``."""
