"""PasteDeploy entry points, so an ``.ini`` file can mount the image server.

``egg:huimages_wsgi#images`` is a filter: put it in a ``pipeline`` in front
of your application and it answers ``<prefix>/<size>/<ID>.jpeg`` while every
other request reaches the application unchanged.  ``egg:huimages_wsgi#main``
is the standalone image server as an app.  Both take the :class:`Config`
field names as ini keys (``data_dir``, ``cache_dir``, ``secret``,
``allowed_sizes``, ``xsendfile`` ...) over the ``HUIMAGES_*`` environment,
plus ``prefix``::

    [pipeline:main]
    pipeline = egg:huimages_wsgi#images myapp

    [filter:images]          # optional: settings for the filter above
    use = egg:huimages_wsgi#images
    prefix = /img
    data_dir = %(here)s/huimages-data
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..web.middleware import ImageMiddleware, WSGIApp

__all__ = ["app_factory", "config_from_ini", "filter_app_factory"]

_PATH_KEYS = ("data_dir", "cache_dir")


def config_from_ini(global_conf: Mapping[str, Any], local_conf: Mapping[str, Any]) -> Config:
    """Build the configuration from one ini section.

    Relative ``data_dir``/``cache_dir`` are taken relative to the ini file's
    directory (PasteDeploy's ``here``), not to wherever the server was
    started, so the same file works from any working directory.
    """
    settings = dict(local_conf)
    here = global_conf.get("here")
    for key in _PATH_KEYS:
        value = settings.get(key)
        if here and value and not Path(value).is_absolute():
            settings[key] = str(Path(here) / value)
    return Config.from_mapping(settings)


def filter_app_factory(app: WSGIApp, global_conf: Mapping[str, Any], **local_conf: Any) -> WSGIApp:
    """``egg:huimages_wsgi#images``: images under ``prefix`` (default ``/img``), rest to ``app``."""
    prefix = local_conf.pop("prefix", "/img")
    return ImageMiddleware(app, prefix=prefix, config=config_from_ini(global_conf, local_conf))


def app_factory(global_conf: Mapping[str, Any], **local_conf: Any) -> WSGIApp:
    """``egg:huimages_wsgi#main``: the standalone image server (``prefix`` defaults to none)."""
    prefix = local_conf.pop("prefix", "")
    return ImageMiddleware(None, prefix=prefix, config=config_from_ini(global_conf, local_conf))
