"""Backend combinations the behavioural suite runs against, built on real servers.

``embedded`` is disk + SQLite; ``s3+couch`` is production huImages;
``s3+sqlite`` and ``disk+couch`` mix them (any combination must work);
``legacy`` stores every upload the way huImages' first versions did, as a
CouchDB attachment only, so every read exercises the migration to S3.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from huimages_wsgi import Config, ImageStore
from huimages_wsgi.storage.couch import CouchCatalog
from huimages_wsgi.storage.migrating import MigratingBlobStore

from .services import PouchDBServer, SeaweedS3

BACKENDS = ("embedded", "s3+couch", "s3+sqlite", "disk+couch", "legacy")
#: The combinations that need the S3 server, and those that need CouchDB.
S3_BACKENDS = frozenset({"s3+couch", "s3+sqlite", "legacy"})
COUCH_BACKENDS = frozenset({"s3+couch", "disk+couch", "legacy"})
SERVER_URL = "http://img.example.test/"


class LegacyWriter(MigratingBlobStore):
    """Writes like huImages 0.x (attachment only); reads like today (migrating)."""

    def put(self, imageid: str, data: bytes, content_type: str, width: int, height: int) -> None:
        self.legacy.put(imageid, data, content_type, width, height)


def backend_config(
    backend: str,
    data_dir: Path,
    s3: SeaweedS3 | None = None,
    couch: PouchDBServer | None = None,
    **options: object,
) -> Config:
    """A fresh, empty configuration: new data dir, new bucket, new database."""
    fields: dict[str, object] = {"data_dir": data_dir, "server_url": SERVER_URL, **options}
    if backend in S3_BACKENDS:
        assert s3 is not None
        fields["s3_bucket"] = s3.create_bucket()
    if backend in COUCH_BACKENDS:
        assert couch is not None
        fields["couch_server"] = couch.url
        fields["couch_db"] = f"huimages_test_{secrets.token_hex(4)}"
    return Config(**fields)  # type: ignore[arg-type]


def backend_store(backend: str, config: Config) -> ImageStore:
    if backend != "legacy":
        return ImageStore(config)
    catalog = CouchCatalog(config.couch_server or "", config.couch_db)
    store = ImageStore(config, catalog=catalog)
    assert isinstance(store.blobs, MigratingBlobStore)
    store.blobs = LegacyWriter(store.blobs.primary, store.blobs.legacy)
    return store


def primary_has(store: ImageStore, imageid: str) -> bool:
    """Whether the current blob store holds the original (not a legacy attachment)."""
    blobs = store.blobs
    return (blobs.primary if isinstance(blobs, MigratingBlobStore) else blobs).exists(imageid)


def read_original(store: ImageStore, imageid: str) -> bytes:
    with store.blobs.open(imageid) as handle:
        return handle.read()
