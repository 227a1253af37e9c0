"""Originals in an S3 bucket (AWS, SeaweedFS, MinIO, Ceph) via boto3.

The endpoint and credentials come from boto3's own configuration chain
(``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``,
profiles, instance roles), so nothing S3-specific is configured twice.
Objects are written private (no ACL is ever set) with an MD5 the server
checks, and read by streaming into a temporary file, never whole into memory.
Previews are objects of their own, ``<ID>.<name>`` (``<ID>.p512``), private
like the originals.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..core.errors import BackendUnavailable
from ..core.ids import validate_id
from ..core.observe import timed
from ..core.previews import PREVIEW_NAMES, check_preview_name
from .base import BlobNotFound, BlobStore

log = logging.getLogger("huimages_wsgi")

_MISSING = {"404", "NoSuchKey", "NotFound"}
#: Server-side encryption whose ETag is not the MD5 of the object (AWS documents
#: this for SSE-KMS, DSSE-KMS and SSE-C; multipart ETags end in ``-<parts>``).
_OPAQUE_ETAG_ENCRYPTION = {"aws:kms", "aws:kms:dsse"}
_STREAM_CHUNK = 1 << 20  # bytes per read when copying an object to a temporary file


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, timeout: float = 10.0, create_bucket: bool = False,
                 client: Any = None) -> None:
        self.bucket = bucket
        self.create_bucket = create_bucket
        self.client = client or boto3.session.Session().client(
            "s3",
            config=BotoConfig(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        self._ready = not create_bucket
        self._lock = threading.Lock()

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """Run one S3 call, translating failures into our error vocabulary."""
        self._ensure_bucket()
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if _code(exc) in _MISSING and "Key" in kwargs:
                # The bucket stays in the log: the message reaches HTTP clients.
                log.info("S3 %s: no object s3://%s/%s", operation, self.bucket, kwargs["Key"])
                raise BlobNotFound(f"no stored copy of {kwargs['Key']}") from None
            raise BackendUnavailable(f"S3 {operation} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise BackendUnavailable(f"S3 unreachable: {exc}") from exc

    def _ensure_bucket(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in _MISSING | {"NoSuchBucket"}:
                    raise BackendUnavailable(f"S3 bucket check failed: {exc}") from exc
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as create_exc:
                    if _code(create_exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise BackendUnavailable(f"cannot create bucket: {create_exc}") from None
            except BotoCoreError as exc:
                raise BackendUnavailable(f"S3 unreachable: {exc}") from exc
            self._ready = True

    @timed("s3", "put")
    def put(self, imageid: str, data: bytes, content_type: str, width: int, height: int) -> None:
        """Store and verify; an object already holding these bytes is left as it is.

        Keys are content hashes, so a matching object is this very original
        (a repeated upload): rewriting it would only risk it.
        """
        key = validate_id(imageid)
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        before = self._head(key)
        if before is not None and copy_matches(before, len(data), digest.hex()):
            return
        self._call(
            "put_object",
            Key=key,
            Body=data,
            ContentType=content_type,
            ContentMD5=base64.b64encode(digest).decode("ascii"),
            Metadata={"width": str(width), "height": str(height)},
        )
        self.verify(key, len(data), digest.hex(), discard=before is None)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self._call("head_object", Key=key)
        except BlobNotFound:
            return None

    @timed("s3", "verify")
    def verify(self, imageid: str, length: int, md5_hex: str, discard: bool = True) -> None:
        """Read back what S3 says it holds; raise unless it is our bytes.

        With ``discard`` (the key held nothing before our put) a bad copy is
        removed too: left in place it would be trusted later, as the
        migration takes an existing object as "already there". A HEAD that
        fails proves nothing, so the object stays.
        """
        try:
            matches = copy_matches(self._call("head_object", Key=imageid), length, md5_hex)
        except BlobNotFound:
            matches = False  # gone right after the put: no better than a wrong copy
        if not matches:
            if discard:
                self._discard(imageid)
            raise BackendUnavailable(f"S3 copy of {imageid} does not match the original")

    def _discard(self, key: str) -> None:
        """Best effort: the caller is already failing, with the more useful error."""
        try:
            self._call("delete_object", Key=key)
        except (BackendUnavailable, BlobNotFound) as exc:
            log.error("could not remove the unverified S3 object %s: %s", key, exc)

    @timed("s3", "open")
    def open(self, imageid: str) -> BinaryIO:
        return self._read(validate_id(imageid))

    def _read(self, key: str) -> BinaryIO:
        response = self._call("get_object", Key=key)
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller
        try:
            with response["Body"] as body:
                shutil.copyfileobj(body, spool, _STREAM_CHUNK)
        except (BotoCoreError, OSError) as exc:
            spool.close()
            raise BackendUnavailable(f"S3 read of {key} failed: {exc}") from exc
        spool.seek(0)
        return spool  # type: ignore[return-value]

    @staticmethod
    def derived_key(imageid: str, name: str) -> str:
        return f"{validate_id(imageid)}.{check_preview_name(name)}"

    @timed("s3", "put_derived")
    def put_derived(self, imageid: str, name: str, data: bytes) -> bool:
        """Stored with an MD5 the server checks; no read-back, unlike an original:
        a preview can be made again, and one that does not decode is not used."""
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        self._call(
            "put_object",
            Key=self.derived_key(imageid, name),
            Body=data,
            ContentType="image/webp" if data[8:12] == b"WEBP" else "image/jpeg",  # alpha: WebP
            ContentMD5=base64.b64encode(digest).decode("ascii"),
        )
        return True

    @timed("s3", "open_derived")
    def open_derived(self, imageid: str, name: str) -> BinaryIO:
        return self._read(self.derived_key(imageid, name))

    @timed("s3", "exists")
    def exists(self, imageid: str) -> bool:
        try:
            self._call("head_object", Key=validate_id(imageid))
        except BlobNotFound:
            return False
        return True

    @timed("s3", "delete")
    def delete(self, imageid: str) -> None:
        for name in sorted(PREVIEW_NAMES):
            self._call("delete_object", Key=self.derived_key(imageid, name))
        self._call("delete_object", Key=validate_id(imageid))

    @timed("s3", "check")
    def check(self) -> None:
        self._ensure_bucket()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise BackendUnavailable(f"S3 bucket {self.bucket}: {exc}") from exc

    def describe(self) -> str:
        return f"s3://{self.bucket}"


def copy_matches(head: Mapping[str, Any], length: int, md5_hex: str) -> bool:
    """Whether a HEAD answer describes exactly the bytes we wrote.

    The length must always match. The ETag is the MD5 of the object except
    for multipart uploads and some server-side encryption; for those only the
    length can be compared here, and the content rests on the Content-MD5
    that the server checked when it accepted the upload.
    """
    if head.get("ContentLength") != length:
        return False
    etag = str(head.get("ETag", "")).strip('"').lower()
    opaque = ("-" in etag or head.get("ServerSideEncryption") in _OPAQUE_ETAG_ENCRYPTION
              or bool(head.get("SSECustomerAlgorithm")))
    return opaque or etag == md5_hex.lower()
