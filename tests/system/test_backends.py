"""S3, CouchDB and legacy attachments: what only the real backends can show.

The behavioural suite (test_store, test_wsgi) already runs on every backend
combination; this module covers what is specific to each backend: object
privacy and metadata, the CouchDB document shape and design documents, write
conflicts, and the migration of legacy attachment originals.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import couchdb
import pytest
from PIL import Image
from webob import Request

from huimages_wsgi import Config, ImageStore, make_app
from huimages_wsgi.core.errors import BackendUnavailable
from huimages_wsgi.core.ids import compute_id
from huimages_wsgi.storage.couch import CouchCatalog
from huimages_wsgi.storage.couchviews import DESIGN_ID, DESIGN_VERSION
from huimages_wsgi.storage.disk import DiskBlobStore
from huimages_wsgi.storage.migrating import MOVED, MigratingBlobStore
from huimages_wsgi.storage.s3 import S3BlobStore, copy_matches

from .. import imagefactory as f
from ..backends import SERVER_URL, backend_config, backend_store, primary_has, read_original
from ..conftest import LiveServer

#: One SQLite and one CouchDB catalog; originals on disk, so no S3 server is needed.
CATALOGS = pytest.mark.parametrize("backend", ["embedded", "disk+couch"], indirect=True)


@pytest.fixture
def s3_couch(tmp_path, s3_env, s3_server, couch_server) -> Config:
    return backend_config("s3+couch", tmp_path / "data", s3_server, couch_server)


@pytest.fixture
def legacy(tmp_path, s3_env, s3_server, couch_server) -> ImageStore:
    config = backend_config("legacy", tmp_path / "data", s3_server, couch_server)
    return backend_store("legacy", config)


def couch_db(couch_server, name: str) -> couchdb.Database:
    return couchdb.Server(couch_server.url, session=couchdb.http.Session(timeout=10))[name]


# -- S3 -----------------------------------------------------------------------------
def test_s3_objects_are_private_and_carry_type_and_dimensions(s3_couch, s3_server):
    store = ImageStore(s3_couch)
    imageid = store.save_image(f.photo_jpeg(640, 480))
    head = s3_server.client().head_object(Bucket=s3_couch.s3_bucket, Key=imageid)
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {"width": "640", "height": "480"}
    anonymous = f"{s3_server.endpoint_url}/{s3_couch.s3_bucket}/{imageid}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=10)
    assert refused.value.code == 403


class RecordingS3(S3BlobStore):
    """The real client, with every operation noted (and a way to garble ETags)."""

    garble_etags = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.operations: list[str] = []

    def _call(self, operation, **kwargs):
        self.operations.append(operation)
        answer = super()._call(operation, **kwargs)
        if operation == "head_object" and self.garble_etags:
            answer = {**answer, "ETag": '"' + "0" * 32 + '"'}  # not the MD5, not flagged
        return answer


def test_s3_repeated_upload_keeps_the_stored_original(s3_env, s3_server):
    """Keys are content hashes: the same bytes again are no reason to rewrite, or to risk,
    the copy the catalog already points to, even on a server whose ETags do not check."""
    bucket = s3_server.create_bucket()
    data = f.photo_jpeg(64, 48)
    imageid = compute_id(data)
    store = RecordingS3(bucket)
    store.put(imageid, data, "image/jpeg", 64, 48)
    assert store.operations.count("put_object") == 1
    store.operations.clear()
    store.put(imageid, data, "image/jpeg", 64, 48)
    assert "put_object" not in store.operations and "delete_object" not in store.operations

    store.garble_etags = True  # every check now fails: the upload must, the original stays
    with pytest.raises(BackendUnavailable, match="does not match"):
        store.put(imageid, data, "image/jpeg", 64, 48)
    assert "delete_object" not in store.operations
    with S3BlobStore(bucket).open(imageid) as handle:
        assert handle.read() == data


def test_s3_bucket_is_created_only_when_configured(s3_env, s3_server):
    """A missing bucket is a configuration error (503), unless creating it was asked for."""
    client = s3_server.client()
    name = f"huimages-new-{os.getpid()}-{threading.get_ident() % 100_000}"
    with pytest.raises(BackendUnavailable):
        S3BlobStore(name).open(compute_id(b"x"))
    with pytest.raises(BackendUnavailable):
        S3BlobStore(name).check()
    assert name not in {b["Name"] for b in client.list_buckets()["Buckets"]}
    S3BlobStore(name, create_bucket=True).check()
    assert name in {b["Name"] for b in client.list_buckets()["Buckets"]}


def test_s3_missing_original_is_404_not_503(s3_couch, s3_server):
    store = ImageStore(s3_couch)
    imageid = store.save_image(f.solid_jpeg())
    s3_server.client().delete_object(Bucket=s3_couch.s3_bucket, Key=imageid)
    response = Request.blank(f"/9x9/{imageid}.jpeg").get_response(make_app(s3_couch))
    assert response.status_int == 404


PUBLIC_GROUPS = {"http://acs.amazonaws.com/groups/global/AllUsers",
                 "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"}


def public_grants(client, bucket: str, key: str) -> list[dict]:
    grants = client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    return [grant for grant in grants if grant["Grantee"].get("URI") in PUBLIC_GROUPS]


def test_s3_objects_grant_nothing_to_the_public_in_their_acl(s3_couch, s3_server):
    """Not only refused to anonymous GETs now: no grant that a policy change could expose."""
    store, client = ImageStore(s3_couch), s3_server.client()
    imageid = store.save_image(f.photo_jpeg(900, 700))
    keys = [item["Key"] for item in
            client.list_objects_v2(Bucket=s3_couch.s3_bucket)["Contents"]]
    assert imageid in keys and len(keys) > 1  # the original and its previews
    for key in keys:
        assert public_grants(client, s3_couch.s3_bucket, key) == [], key
    # The check can fail on this server: a public-read object shows the grant.
    client.put_object(Bucket=s3_couch.s3_bucket, Key="control", Body=b"x")
    client.put_object_acl(Bucket=s3_couch.s3_bucket, Key="control", ACL="public-read")
    assert public_grants(client, s3_couch.s3_bucket, "control")


def test_s3_404_names_no_bucket_to_the_client(tmp_path, s3_env, s3_server, caplog):
    config = backend_config("s3+sqlite", tmp_path / "data", s3_server)
    store = ImageStore(config)
    imageid = store.save_image(f.solid_jpeg())
    s3_server.client().delete_object(Bucket=config.s3_bucket, Key=imageid)
    with caplog.at_level(logging.INFO, logger="huimages_wsgi"):
        response = Request.blank(f"/o/{imageid}.jpeg").get_response(make_app(config))
    assert response.status_int == 404
    assert config.s3_bucket not in response.text and "s3://" not in response.text
    assert f"s3://{config.s3_bucket}/{imageid}" in caplog.text  # the operator still sees it


class RecordingReads:
    """A real S3 response body that notes the size asked for by every read."""

    def __init__(self, body) -> None:
        self.body, self.sizes = body, []

    def read(self, size=None):
        self.sizes.append(size)
        return self.body.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.body.close()


class RecordingClient:
    """The real boto3 client, whose get_object bodies are RecordingReads."""

    def __init__(self, client) -> None:
        self.client, self.bodies = client, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def get_object(self, **kwargs):
        response = self.client.get_object(**kwargs)
        response["Body"] = RecordingReads(response["Body"])
        self.bodies.append(response["Body"])
        return response


def test_s3_original_is_streamed_to_a_temporary_file_in_chunks(s3_env, s3_server):
    """Never the whole object in memory: bounded reads, into a file on disk."""
    data = os.urandom(3 << 20) + b"tail"
    client = RecordingClient(s3_server.client())
    store = S3BlobStore(s3_server.create_bucket(), client=client)
    imageid = compute_id(data)
    store.put(imageid, data, "image/jpeg", 1, 1)
    with store.open(imageid) as handle:
        assert os.fstat(handle.fileno()).st_size == len(data)  # a real file, already filled
        assert handle.read() == data
    (body,) = client.bodies
    assert len(body.sizes) >= 4  # three full chunks, the tail, the end
    assert all(isinstance(size, int) and 0 < size <= 1 << 20 for size in body.sizes), body.sizes


def test_s3_copy_failing_verification_is_removed_not_trusted_later(legacy, s3_server):
    """The migration takes an existing object as "already there": a bad one must go."""
    data = f.photo_jpeg(64, 64)
    imageid = legacy.save_image(data)
    primary = legacy.blobs.primary

    class Truncating(S3BlobStore):
        def put(self, imageid, data, content_type, width, height):
            self._call("put_object", Key=imageid, Body=data[:-10], ContentType=content_type)
            self.verify(imageid, len(data), hashlib.md5(data).hexdigest())

    failing = MigratingBlobStore(Truncating(primary.bucket), legacy.blobs.legacy)
    with pytest.raises(BackendUnavailable):
        failing.migrate(imageid)
    assert not primary.exists(imageid)
    assert legacy.blobs.migrate(imageid) == MOVED  # not "already there"
    assert read_original(legacy, imageid) == data


def test_s3_verification_accepts_etags_that_are_no_md5_but_still_checks(s3_env, s3_server):
    """Multipart and SSE-KMS/SSE-C ETags are no MD5: the length is still compared."""
    client, bucket = s3_server.client(), s3_server.create_bucket()
    data = os.urandom(5 << 20) + b"second part"
    key = compute_id(data)
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    parts = [
        {"PartNumber": number,
         "ETag": client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                    PartNumber=number, Body=chunk)["ETag"]}
        for number, chunk in ((1, data[: 5 << 20]), (2, data[5 << 20:]))
    ]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    md5 = hashlib.md5(data).hexdigest()
    store = S3BlobStore(bucket)
    store.verify(key, len(data), md5)  # a "-2" ETag, real bytes: accepted
    with pytest.raises(BackendUnavailable):
        store.verify(key, len(data) - 1, md5)
    assert not store.exists(key)  # a copy that failed is removed

    client.put_object(Bucket=bucket, Key="plain", Body=b"hello",
                      ContentMD5=base64.b64encode(hashlib.md5(b"hello").digest()).decode())
    head = client.head_object(Bucket=bucket, Key="plain")
    # SeaweedFS refuses SSE-KMS, so its real answer gets the headers AWS would send.
    kms = {**head, "ETag": '"' + "e" * 32 + '"', "ServerSideEncryption": "aws:kms"}
    assert copy_matches(head, 5, hashlib.md5(b"hello").hexdigest())
    assert not copy_matches(head, 5, md5)  # a plain ETag is an MD5, compared
    assert copy_matches(kms, 5, md5)
    assert not copy_matches(kms, 6, md5)
    assert copy_matches({**head, "ETag": '"x"', "SSECustomerAlgorithm": "AES256"}, 5, md5)


# -- CouchDB ------------------------------------------------------------------------
def test_couch_documents_keep_the_huimages_shape(s3_couch, couch_server):
    store, data = ImageStore(s3_couch), f.photo_jpeg(300, 200)
    imageid = store.save_image(data, title="One", references={"sku": "1"}, typ="product")
    assert store.save_image(data, title="Two", references={"sku": "2"}) == imageid
    doc = couch_db(couch_server, s3_couch.couch_db)[imageid]
    assert doc["title"] == ["One", "Two"]
    assert doc["references"] == {"sku": ["1", "2"]}
    assert doc["types"] == ["product"]
    assert (doc["width"], doc["height"], doc["deleted"]) == (300, 200, False)
    assert doc["contenttype"] == "image/jpeg" and doc["length"] > 0
    assert doc["ctime"] <= doc["mtime"]


def test_an_existing_huimages_database_works_unchanged(s3_couch, couch_server, s3_server):
    """A document written by the original huImages (no fields of ours) is served."""
    data = f.photo_jpeg(400, 300)
    imageid = ImageStore(Config(data_dir=s3_couch.data_dir / "scratch")).save_image(data)
    server = couchdb.Server(couch_server.url)
    db = server.create(s3_couch.couch_db)
    db.save({"_id": imageid, "ctime": "20090101T000000", "mtime": "20090101T000000",
             "title": ["Old"], "references": {}, "types": [], "width": 400, "height": 300,
             "deleted": False})
    s3_server.client().put_object(Bucket=s3_couch.s3_bucket, Key=imageid, Body=data)
    store = ImageStore(s3_couch)
    assert store.scaled_dimensions(imageid, "200x200") == (200, 150)
    with Image.open(store.variant_path(imageid, store.size_for("200x200"))) as image:
        assert image.size == (200, 150)
    assert DESIGN_ID in db  # installed on first use, next to the old documents


def test_design_document_is_upgraded(s3_couch, couch_server):
    db = couchdb.Server(couch_server.url).create(s3_couch.couch_db)
    db.save({"_id": DESIGN_ID, "version": 0, "views": {"live": {"map": "function(d){}"}}})
    store = ImageStore(s3_couch)
    ids = sorted(store.save_image(f.solid_jpeg(colour=(60 * i, 0, 0))) for i in range(3))
    assert store.get_next_imageid(ids[0]) == ids[1]
    assert db[DESIGN_ID]["version"] == DESIGN_VERSION


def test_concurrent_writers_lose_no_update(s3_couch):
    """Two servers (two catalog clients) updating one document: every title survives."""
    imageid = ImageStore(s3_couch).save_image(f.solid_jpeg())
    stores = [ImageStore(s3_couch), ImageStore(s3_couch)]
    titles = [f"t{i}" for i in range(16)]

    def write(index: int) -> None:
        for title in titles[index::2]:
            stores[index].update_metadata(imageid, title=title)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stores[0].get_imagedoc(imageid)["title"]) == sorted(titles)


def test_catalog_ids_page_through_all_docs(s3_couch):
    store = ImageStore(s3_couch)
    ids = {store.save_image(f.solid_jpeg(colour=(30 * i, 0, 90))) for i in range(7)}
    catalog = store.catalog
    assert isinstance(catalog, CouchCatalog)
    assert set(catalog.ids()) == ids
    assert store.get_random_imageid() in ids
    assert set(catalog.recent_ids(100)) == ids


def draw(store: ImageStore, times: int = 200) -> Counter[str | None]:
    return Counter(store.get_random_imageid() for _ in range(times))


@CATALOGS
def test_random_images_spread_over_the_live_ones_only(any_store):
    """Not always the same image, and never a deleted one.

    IDs are hashes, so the 8 spread over the key space; the chance that 200
    draws hit fewer than 3 of them (or 2 of the 4 left) is negligible.
    """
    store = any_store
    ids = sorted(store.save_image(f.solid_jpeg(colour=(30 * i, 90, 30))) for i in range(8))
    drawn = draw(store)
    assert set(drawn) <= set(ids) and len(drawn) >= 3, drawn
    deleted = set(ids[::2])
    for imageid in deleted:
        store.delete_image(imageid)
    drawn = draw(store)
    assert not set(drawn) & deleted, drawn
    assert set(drawn) <= set(ids) - deleted and len(drawn) >= 2, drawn


@CATALOGS
def test_recent_is_newest_first_without_deleted_images(any_store):
    """By upload time (``ctime``), neither by ID nor by the order of the writes."""
    store = any_store
    stamps = ["20100615T080000.000000", "20240229T120000.000000", "20090101T000000.000000",
              "20100615T080000.000001", "20231231T235959.999999"]
    by_stamp = {stamp: store.save_image(f.solid_jpeg(colour=(50 * i, 10, 200)), timestamp=stamp)
                for i, stamp in enumerate(stamps)}
    newest_first = [by_stamp[stamp] for stamp in sorted(stamps, reverse=True)]
    assert newest_first not in (sorted(newest_first), sorted(newest_first, reverse=True))
    assert store.catalog.recent_ids(10) == newest_first
    assert store.catalog.recent_ids(2) == newest_first[:2]
    store.save_image(f.solid_jpeg(colour=(0, 10, 200)), timestamp="20250101T000000.000000")
    assert store.catalog.recent_ids(10) == newest_first  # a repeat keeps its first ctime
    store.delete_image(newest_first[0])
    assert store.catalog.recent_ids(10) == newest_first[1:]


def test_disk_originals_with_a_couch_catalog_from_the_environment(couch_server, tmp_path):
    """The mix no other deployment test covers: HUIMAGESCOUCHSERVER without a bucket."""
    dbname = f"huimages_disk_{secrets.token_hex(4)}"
    config = Config.from_env({"HUIMAGES_DATA_DIR": str(tmp_path / "data"),
                              "HUIMAGESCOUCHSERVER": couch_server.url,
                              "HUIMAGES_COUCHDB_NAME": dbname, "IMAGESERVERURL": SERVER_URL})
    data = f.photo_jpeg(640, 480, seed=21)
    imageid = make_app(config).store.save_image(data, title="Disk and Couch")
    on_disk = DiskBlobStore(config.data_dir / "originals").path(imageid)
    assert on_disk.read_bytes() == data
    assert couch_db(couch_server, dbname)[imageid]["title"] == ["Disk and Couch"]

    app = make_app(config)  # a second server: all it knows comes from disk and CouchDB
    served = Request.blank(f"/320x320/{imageid}/disk-and-couch.jpeg").get_response(app)
    assert served.status_int == 200, served.body
    assert decode(served.body) == (320, 240)
    app.store.delete_image(imageid)
    assert not on_disk.exists()
    assert couch_db(couch_server, dbname)[imageid]["deleted"] is True
    for path in (f"/320x320/{imageid}.jpeg", f"/o/{imageid}.jpeg"):
        assert Request.blank(path).get_response(make_app(config)).status_int == 404, path


def couch_admin(server, method: str, name: str, body: bytes | None = None,
                auth: str | None = None) -> None:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    request = urllib.request.Request(f"{server.url}_config/admins/{name}", data=body,
                                     method=method, headers=headers)
    urllib.request.urlopen(request, timeout=10).close()


def test_couch_wrong_credentials_are_503_and_a_clear_cli_error(own_couch, tmp_path):
    """An ended admin party and a wrong password: no 500, no traceback, no password shown."""
    couch_admin(own_couch, "PUT", "boss", json.dumps("right-pw").encode())
    try:
        good = own_couch.url.replace("http://", "http://boss:right-pw@")
        bad = own_couch.url.replace("http://", "http://boss:wrong-pw@")
        config = Config(data_dir=tmp_path / "data", server_url="http://img.example.test/",
                        couch_server=bad, couch_db="huimages_creds", upload_token="t" * 16)
        CouchCatalog(good, config.couch_db).check()  # the password is all that differs
        with pytest.raises(BackendUnavailable, match="refused access"):
            CouchCatalog(bad, config.couch_db).check()
        imageid = compute_id(b"any")
        app = make_app(config)
        for path, headers in ((f"/9x9/{imageid}.jpeg", {}),
                              (f"/_api/images/{imageid}", {"Authorization": "Bearer " + "t" * 16})):
            response = Request.blank(path, headers=headers).get_response(app)
            assert response.status_int == 503, (path, response.body)
            assert response.headers["Retry-After"]
            assert "wrong-pw" not in response.text
            # the public is told the storage is unavailable; the token's holder why
            assert ("401" in response.text) == bool(headers), response.text
        result = run_cli({"HUIMAGES_DATA_DIR": str(config.data_dir),
                          "HUIMAGESCOUCHSERVER": bad, "HUIMAGES_COUCHDB_NAME": config.couch_db},
                         "info", imageid)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("huimages: CouchDB refused access")
        assert "Traceback" not in result.stderr and "wrong-pw" not in result.stderr
    finally:
        couch_admin(own_couch, "DELETE", "boss", auth="boss:right-pw")


def test_couch_database_deleted_under_a_server_is_503_then_recreated(s3_couch, couch_server):
    """A view on a database deleted under a running server is a 404 from CouchDB.

    (A 403 is mapped like the 401 above, but pouchdb-server answers 401 even
    where CouchDB says 403, so no test provokes one.)
    """
    app = make_app(s3_couch.with_changes(upload_token="t" * 16))
    auth = {"Authorization": "Bearer " + "t" * 16}
    imageid = app.store.save_image(f.solid_jpeg())
    couchdb.Server(couch_server.url).delete(s3_couch.couch_db)
    gone = Request.blank("/_api/random", headers=auth).get_response(app)
    assert gone.status_int == 503 and gone.headers["Retry-After"], gone.body
    assert "missing" in gone.json["error"]
    again = Request.blank("/_api/random", headers=auth).get_response(app)
    assert again.status_int == 200 and again.json == {"id": None}  # an empty database again
    assert app.store.catalog.get(imageid) is None


# -- legacy attachments -------------------------------------------------------------
def test_attachment_only_original_is_served_and_moved_to_s3(legacy):
    data = f.photo_jpeg(500, 400)
    imageid = legacy.save_image(data)
    assert not primary_has(legacy, imageid)  # stored as huImages 0.x did
    with Image.open(legacy.variant_path(imageid, legacy.size_for("100x100"))) as image:
        assert image.size == (100, 80)
    assert primary_has(legacy, imageid)
    assert read_original(legacy, imageid) == data
    assert legacy.blobs.legacy.exists(imageid)  # the legacy copy is never removed


def test_migrate_command_is_resumable_and_idempotent(legacy, tmp_path, s3_server, couch_server):
    ids = [legacy.save_image(f.solid_jpeg(colour=(40 * i, 9, 9))) for i in range(4)]
    legacy.variant_path(ids[0], legacy.size_for("10x10"))  # one moved already by a read
    config = legacy.config
    env = {**s3_server.env, "HUIMAGES_DATA_DIR": str(config.data_dir),
           "HUIMAGES3BUCKET": config.s3_bucket, "HUIMAGESCOUCHSERVER": couch_server.url,
           "HUIMAGES_COUCHDB_NAME": config.couch_db}
    first = run_cli(env, "migrate", "--progress")
    assert first.returncode == 0, first.stderr
    assert "3 moved, 1 already there, 0 failed" in first.stdout
    assert "migrating" in first.stderr  # the progress bar
    second = run_cli(env, "migrate")
    assert "0 moved, 4 already there, 0 failed" in second.stdout
    assert all(primary_has(legacy, imageid) for imageid in ids)


def test_migrate_refuses_without_couchdb(tmp_path):
    result = run_cli({"HUIMAGES_DATA_DIR": str(tmp_path)}, "migrate")
    assert result.returncode != 0 and "HUIMAGESCOUCHSERVER" in result.stderr


def test_migration_verifies_the_s3_copy_before_changing_anything(legacy, s3_server):
    """A corrupting primary store must fail the migration, not serve or record bad bytes."""
    imageid = legacy.save_image(f.photo_jpeg(64, 64))

    class Corrupting(S3BlobStore):
        def put(self, imageid, data, content_type, width, height):
            self._call("put_object", Key=imageid, Body=data[:-10], ContentType=content_type)
            self.verify(imageid, len(data), "0" * 32)

    primary = legacy.blobs.primary
    legacy.blobs = MigratingBlobStore(Corrupting(primary.bucket), legacy.blobs.legacy)
    with pytest.raises(BackendUnavailable):
        legacy.variant_path(imageid, legacy.size_for("10x10"))
    assert not list(legacy.cache.root.glob("*/*.jpeg"))


def test_first_read_migration_copies_the_catalog_dimensions(legacy, s3_server):
    imageid = legacy.save_image(f.photo_jpeg(500, 400))
    legacy.variant_path(imageid, legacy.size_for("100x100"))  # moves the original to S3
    head = s3_server.client().head_object(Bucket=legacy.config.s3_bucket, Key=imageid)
    assert head["Metadata"] == {"width": "500", "height": "400"}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "huimages"), *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def decode(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as image:
        return image.size


def test_migrate_while_a_server_serves_the_same_images(legacy, tmp_path, s3_server,
                                                       couch_server):
    """Server reads (which migrate too) race the bulk migration: no failure on either side."""
    ids = [legacy.save_image(f.photo_jpeg(160, 120, seed=s)) for s in range(12)]
    config = legacy.config
    env = {**s3_server.env, "HUIMAGES3BUCKET": config.s3_bucket or "",
           "HUIMAGESCOUCHSERVER": couch_server.url, "HUIMAGES_COUCHDB_NAME": config.couch_db}
    server = LiveServer(tmp_path / "node", env).start()
    try:
        statuses: list[int] = []

        def read_all() -> None:
            for imageid in ids:
                with urllib.request.urlopen(f"{server.url}/40x40/{imageid}.jpeg") as response:
                    statuses.append(response.status)

        readers = [threading.Thread(target=read_all) for _ in range(2)]
        for reader in readers:
            reader.start()
        migrated = server.cli("migrate")
        for reader in readers:
            reader.join()
    finally:
        server.stop()
    assert statuses == [200] * (2 * len(ids))
    moved, already = (int(n) for n in re.findall(r"(\d+) (?:moved|already there)",
                                                  migrated.stdout))
    assert moved + already == len(ids) and ", 0 failed" in migrated.stdout
    assert all(primary_has(legacy, imageid) for imageid in ids)
