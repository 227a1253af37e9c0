"""The real S3 and CouchDB servers do what huimages relies on.

These tests pin the protocol behaviour huimages uses (object metadata, privacy, 404s,
revisions and conflicts, binary attachments, views and ``_all_docs`` paging) against the
servers the suite runs, through the same client libraries (boto3, couchdb-python), and
prove that ``restart()`` keeps data so fault-injection tests can rely on it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import couchdb
import couchdb.http
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from ..services import ManagedServer, PouchDBServer, SeaweedS3

pytestmark = pytest.mark.services  # the managed servers themselves

# Timeout for couchdb-python's HTTP connections: its default (None) waits forever on a
# server that accepts connections but never answers.
COUCH_HTTP_TIMEOUT = 10


def fake_jpeg(size: int) -> bytes:
    """Bytes that look like a JPEG and contain every byte value (catches text mangling)."""
    body = bytes(range(256)) * (size // 256 + 1)
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + body[:size] + b"\xff\xd9"


# -- fixtures (session-scoped: each server starts once per test run) -------------------
@pytest.fixture
def bucket(s3_server: SeaweedS3) -> str:
    return s3_server.create_bucket()


@pytest.fixture
def s3(s3_server: SeaweedS3):
    return s3_server.client()


@pytest.fixture
def couch(couch_server: PouchDBServer) -> couchdb.Server:
    session = couchdb.http.Session(timeout=COUCH_HTTP_TIMEOUT)
    return couchdb.Server(couch_server.url, session=session)


@pytest.fixture
def db(couch: couchdb.Server) -> Iterator[couchdb.Database]:
    name = f"test-{secrets.token_hex(4)}"
    database = couch.create(name)
    yield database
    del couch[name]


# -- server lifecycle -------------------------------------------------------------------
def test_servers_start_quickly(s3_server: SeaweedS3, couch_server: PouchDBServer) -> None:
    assert s3_server.startup_seconds is not None and s3_server.startup_seconds < 30
    assert couch_server.startup_seconds is not None and couch_server.startup_seconds < 30


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    class Broken(ManagedServer):
        name = "broken"

        def command(self) -> list[str]:
            return ["sh", "-c", "echo 'cannot open data dir' >&2; exit 3"]

        def probe(self) -> bool:
            return False

    with pytest.raises(RuntimeError, match="(?s)exited with status 3.*cannot open data dir"):
        Broken(tmp_path).start()


def test_start_timeout_raises_and_kills(tmp_path: Path) -> None:
    class Hung(ManagedServer):
        name = "hung"

        def command(self) -> list[str]:
            return ["sleep", "60"]

        def probe(self) -> bool:
            return False

    server = Hung(tmp_path)
    with pytest.raises(RuntimeError, match="not ready after 1 s"):
        server.start(timeout=1)
    assert not server.running


# -- S3 (SeaweedFS) ---------------------------------------------------------------------
def test_s3_object_roundtrip_with_metadata(s3, bucket: str) -> None:
    data = fake_jpeg(300_000)
    s3.put_object(
        Bucket=bucket,
        Key="ab/cdef.jpeg",
        Body=data,
        ContentType="image/jpeg",
        Metadata={"width": "640", "height": "480"},
    )

    head = s3.head_object(Bucket=bucket, Key="ab/cdef.jpeg")
    assert head["ContentType"] == "image/jpeg"
    assert head["ContentLength"] == len(data)
    assert head["Metadata"] == {"width": "640", "height": "480"}
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()

    response = s3.get_object(Bucket=bucket, Key="ab/cdef.jpeg")
    assert response["ContentType"] == "image/jpeg"
    assert response["Metadata"] == {"width": "640", "height": "480"}
    chunks = list(response["Body"].iter_chunks(chunk_size=64 * 1024))
    assert len(chunks) > 1  # really streamed, not one blob
    assert b"".join(chunks) == data

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="ab/")
    assert [obj["Key"] for obj in listed["Contents"]] == ["ab/cdef.jpeg"]

    s3.delete_object(Bucket=bucket, Key="ab/cdef.jpeg")
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="ab/cdef.jpeg")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_s3_large_object_spans_chunks(s3, bucket: str) -> None:
    # The filer splits objects into 4 MiB chunks; an original photo can be bigger.
    data = os.urandom(9 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big.jpeg", Body=data, ContentType="image/jpeg")
    assert s3.get_object(Bucket=bucket, Key="big.jpeg")["Body"].read() == data


def test_s3_missing_key_is_404(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="no/such.jpeg")
    assert excinfo.value.response["Error"]["Code"] == "NoSuchKey"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # HEAD has no body, so botocore can only report the status code.
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="no/such.jpeg")
    assert excinfo.value.response["Error"]["Code"] == "404"

    # Deleting a missing key is not an error in S3.
    s3.delete_object(Bucket=bucket, Key="no/such.jpeg")


def test_s3_objects_are_private_by_default(s3_server: SeaweedS3, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="secret.jpeg", Body=b"\xff\xd8\xff\xd9")
    url = f"{s3_server.endpoint_url}/{bucket}/secret.jpeg"

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url, timeout=10)
    assert excinfo.value.code == 403

    anonymous = s3_server.client(signature_version=UNSIGNED)
    with pytest.raises(ClientError) as excinfo:
        anonymous.get_object(Bucket=bucket, Key="secret.jpeg")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    wrong_secret = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3_server.region,
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as excinfo:
        wrong_secret.get_object(Bucket=bucket, Key="secret.jpeg")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_env_configures_plain_boto3(
    s3_server: SeaweedS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huimages is configured through the standard AWS_* variables only.
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    client = boto3.session.Session().client("s3")
    client.put_object(Bucket=bucket, Key="env.jpeg", Body=b"via env")
    assert client.get_object(Bucket=bucket, Key="env.jpeg")["Body"].read() == b"via env"


def test_s3_restart_keeps_data(s3_server: SeaweedS3, s3, bucket: str) -> None:
    data = fake_jpeg(50_000)
    s3.put_object(Bucket=bucket, Key="keep.jpeg", Body=data, Metadata={"width": "1"})
    endpoint = s3_server.endpoint_url

    s3_server.stop()
    with pytest.raises(EndpointConnectionError):
        s3.head_object(Bucket=bucket, Key="keep.jpeg")
    s3_server.start()

    assert s3_server.endpoint_url == endpoint
    assert s3_server.startup_seconds is not None and s3_server.startup_seconds < 30
    # The client created before the restart keeps working.
    response = s3.get_object(Bucket=bucket, Key="keep.jpeg")
    assert response["Metadata"] == {"width": "1"}
    assert response["Body"].read() == data
    s3.put_object(Bucket=bucket, Key="after.jpeg", Body=b"new")


# -- CouchDB (pouchdb-server) -----------------------------------------------------------
def test_couch_save_and_conflict_detection(db: couchdb.Database) -> None:
    doc = {"_id": "abcdef", "width": 640, "height": 480}
    db.save(doc)
    assert doc["_rev"].startswith("1-")
    stale = dict(doc)

    doc["height"] = 481
    db.save(doc)
    assert doc["_rev"].startswith("2-")

    stale["height"] = 999
    with pytest.raises(couchdb.http.ResourceConflict):
        db.save(stale)
    assert db["abcdef"]["height"] == 481

    with pytest.raises(couchdb.http.ResourceConflict):
        db.save({"_id": "abcdef"})  # create over an existing doc
    with pytest.raises(couchdb.http.ResourceNotFound):
        db["missing"]  # noqa: B018
    assert db.get("missing") is None


@pytest.mark.parametrize("size", [100, 200_000], ids=["small", "streamed"])
def test_couch_binary_attachments(db: couchdb.Database, size: int) -> None:
    # couchdb-python buffers bodies under 8 KiB and streams larger ones: test both paths.
    data = fake_jpeg(size)
    doc = {"_id": "img"}
    db.save(doc)
    rev = doc["_rev"]
    # Pass bytes, not a file object: couchdb-python retries a request once when a pooled
    # keep-alive connection was closed by the server (pouchdb-server closes idle ones
    # after 5 s), and on that retry a file object is already partly read, so the
    # attachment is silently stored truncated.
    db.put_attachment(doc, data, filename="original.jpeg", content_type="image/jpeg")
    assert doc["_rev"] != rev  # put_attachment updates the caller's revision

    stub = db["img"]["_attachments"]["original.jpeg"]
    assert stub["content_type"] == "image/jpeg"
    assert stub["length"] == len(data)
    assert stub["stub"] is True

    body = db.get_attachment("img", "original.jpeg")
    assert body is not None
    assert body.read() == data
    assert db.get_attachment("img", "nothing.jpeg") is None

    with pytest.raises(couchdb.http.ResourceConflict):
        db.put_attachment({"_id": "img", "_rev": rev}, b"x", filename="late.jpeg")

    db.delete_attachment(doc, "original.jpeg")
    assert db.get_attachment("img", "original.jpeg") is None


def test_couch_view_with_startkey_and_limit(db: couchdb.Database) -> None:
    for i in range(6):
        db.save({"_id": f"img{i:02d}", "deleted": i in (2, 3), "width": 100 + i})
    db.save(
        {
            "_id": "_design/huimages",
            "views": {
                "live": {"map": "function(doc) { if (!doc.deleted) { emit(doc._id, doc.width); } }"}
            },
        }
    )

    rows = list(db.view("huimages/live"))
    assert [row.id for row in rows] == ["img00", "img01", "img04", "img05"]
    assert [row.value for row in rows] == [100, 101, 104, 105]

    page = list(db.view("huimages/live", startkey="img01", limit=2))
    assert [row.key for row in page] == ["img01", "img04"]

    page = list(db.view("huimages/live", startkey="img04", limit=2, descending=True))
    assert [row.key for row in page] == ["img04", "img01"]

    with_docs = list(db.view("huimages/live", key="img05", include_docs=True))
    assert with_docs[0].doc["width"] == 105

    # Views follow updates.
    doc = db["img00"]
    doc["deleted"] = True
    db.save(doc)
    assert [row.id for row in db.view("huimages/live", limit=1)] == ["img01"]


def test_couch_all_docs_paging(db: couchdb.Database) -> None:
    for i in range(5):
        db.save({"_id": f"k{i}", "n": i})

    page = db.view("_all_docs", startkey="k1", limit=2)
    assert [row.id for row in page] == ["k1", "k2"]
    assert page.total_rows == 5

    page = db.view("_all_docs", startkey="k3", limit=3, descending=True)
    assert [row.id for row in page] == ["k3", "k2", "k1"]

    page = db.view("_all_docs", startkey="k4", limit=2, include_docs=True)
    assert [(row.id, row.doc["n"]) for row in page] == [("k4", 4)]

    assert len(db) == 5


def test_couch_delete_document(db: couchdb.Database) -> None:
    doc = {"_id": "gone"}
    db.save(doc)
    db.delete(doc)
    assert "gone" not in db
    assert db.get("gone") is None


def test_couch_del_item_does_not_work_on_pouchdb(db: couchdb.Database) -> None:
    """Known incompatibility: use ``db.delete(doc)``, never ``del db[doc_id]``.

    couchdb-python's ``Database.__delitem__`` sends HEAD and uses the ETag as the
    revision. CouchDB's ETag is the ``_rev``; pouchdb-server's is Express's body hash.
    """
    db.save({"_id": "stays"})
    with pytest.raises(couchdb.http.ResourceNotFound):
        del db["stays"]
    assert "stays" in db


def test_couch_restart_keeps_data(
    couch_server: PouchDBServer, couch: couchdb.Server, db: couchdb.Database
) -> None:
    data = fake_jpeg(20_000)
    doc = {"_id": "keep", "width": 7}
    db.save(doc)
    db.put_attachment(doc, data, filename="original.jpeg", content_type="image/jpeg")
    url = couch_server.url

    couch_server.stop()
    # A stopped server surfaces as a plain OSError, not as couchdb.http.HTTPError.
    with pytest.raises(OSError):
        db.get("keep")
    couch_server.start()

    assert couch_server.url == url
    assert couch_server.startup_seconds is not None and couch_server.startup_seconds < 30
    # The client objects from before the restart keep working: couchdb-python retries
    # once when a pooled keep-alive connection turns out to be dead.
    assert db["keep"]["width"] == 7
    assert db.get_attachment("keep", "original.jpeg").read() == data
    assert db.name in couch
