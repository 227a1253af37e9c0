"""Storage backends behind two small interfaces, chosen by configuration.

The embedded default is originals on local disk and the catalog in SQLite,
both under the data directory. S3 (originals) and CouchDB (catalog, and the
legacy attachment originals) are used when configured; their modules are
imported only then, so the embedded default needs neither client library.
"""

from __future__ import annotations

from ..core.config import Config
from .base import BlobNotFound, BlobStore, Catalog, Doc, is_live, timestamp

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "Catalog",
    "Doc",
    "is_live",
    "open_blob_store",
    "open_catalog",
    "timestamp",
]


def open_catalog(config: Config) -> Catalog:
    if config.couch_server:
        from .couch import CouchCatalog

        return CouchCatalog(config.couch_server, config.couch_db, timeout=config.backend_timeout)
    from .sqlite import SQLiteCatalog

    return SQLiteCatalog(config.data_dir / "catalog.sqlite3", timeout=config.backend_timeout)


def open_blob_store(config: Config, catalog: Catalog | None = None) -> BlobStore:
    """The blob store; with CouchDB configured, legacy attachments are read too."""
    if config.s3_bucket:
        from .s3 import S3BlobStore

        store: BlobStore = S3BlobStore(
            config.s3_bucket,
            timeout=config.backend_timeout,
            create_bucket=config.s3_create_bucket,
        )
    else:
        from .disk import DiskBlobStore

        store = DiskBlobStore(config.data_dir / "originals")
    if config.couch_server and catalog is not None:
        from .couch import CouchCatalog
        from .migrating import MigratingBlobStore

        if isinstance(catalog, CouchCatalog):
            store = MigratingBlobStore(store, catalog.attachments())
    return store
