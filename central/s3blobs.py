"""Blobs in an S3-compatible object store (``--blobs s3://BUCKET/PREFIX``), through boto3.

Objects are named like the blob tree's files, ``PREFIX/sha256/ab/cd/<hex>``, so storage stays
content-addressed and a second upload of the same bytes is a harmless overwrite with equal bytes.
A PUT (or a completed multipart upload) is atomic: readers see the whole object or none. An
object counts as stored only after it was read back and hashed to its name, so a receipt never
says ``stored`` for bytes the store does not hold. Credentials and endpoint come from boto3's
usual places: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION`` /
``AWS_ENDPOINT_URL`` (MinIO, Ceph RGW, ...), ``AWS_PROFILE`` or a credentials file.

Setting mistakes (no bucket, wrong credentials, unreachable endpoint) found when the backend is
opened raise ``BlobStoreError`` with the fix; failures while ingesting raise ``BlobStoreUnavailable``,
an ``OSError``, so the ingester treats them like a failing disk (an outage: nothing is committed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.extras import require
from central.blobs import blob_key, hash_fd
from central.errors import StoreError

PART_BYTES = 64 * 1024 * 1024  # multipart above this, in parts of this size
CACHE_BYTES = 2 * 1024**3  # downloaded copies kept for readers that need a path (FIELDCAP_S3_CACHE_BYTES)
READ_BYTES = 1024 * 1024


class BlobStoreError(StoreError):
    """The object store cannot be used as configured (bucket, credentials, endpoint)."""


class BlobStoreUnavailable(OSError):
    """The object store failed an operation while ingesting or reading."""


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")


class S3Blobs:
    """``BlobBackend`` on one bucket and key prefix."""

    def __init__(self, url: str, *, part_bytes: int = PART_BYTES) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BlobStoreError(f"--blobs {url}: write s3://BUCKET or s3://BUCKET/PREFIX")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        boto3 = require("boto3", "central", "S3 blob storage")
        self._botocore_exc = require("botocore.exceptions", "central", "S3 blob storage")
        config = require("botocore.config", "central", "S3 blob storage").Config(
            retries={"max_attempts": 5, "mode": "standard"}
        )
        transfer = require("boto3.s3.transfer", "central", "S3 blob storage")
        self._transfer = transfer.TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes)
        self._part_bytes = part_bytes
        try:
            self._s3: Any = boto3.session.Session().client("s3", config=config)
        except self._botocore_exc.BotoCoreError as exc:
            raise BlobStoreError(f"--blobs {self.url}: cannot set up the S3 client: {exc}") from None
        self.endpoint = str(self._s3.meta.endpoint_url)
        self._cache = Path(tempfile.mkdtemp(prefix="fieldcap-s3-"))
        self._cached: OrderedDict[str, int] = OrderedDict()  # sha256 -> size, least recently used first
        self._cache_bytes = int(os.environ.get("FIELDCAP_S3_CACHE_BYTES", CACHE_BYTES))
        self._check_bucket()

    def describe(self) -> str:
        return f"{self.url} (at {self.endpoint})"

    def default_staging(self) -> Path | None:
        return None

    def key(self, sha256: str) -> str:
        name = blob_key(sha256)
        return f"{self.prefix}/{name}" if self.prefix else name

    # ------------------------------------------------------------------ errors

    def _explain(self, exc: Exception, doing: str) -> str:
        """One line that says what failed, where, and what to do about it."""
        where = f"{doing} {self.url} at {self.endpoint}"
        exc_mod = self._botocore_exc
        if isinstance(exc, exc_mod.NoCredentialsError):
            return (
                f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE / a credentials file)"
            )
        if isinstance(exc, exc_mod.EndpointConnectionError | exc_mod.ConnectionClosedError):
            return f"{where}: cannot reach the S3 endpoint ({exc}); check AWS_ENDPOINT_URL and the network"
        if isinstance(exc, exc_mod.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket", "404") or (status == 404 and doing == "checking"):
                return f"{where}: the bucket {self.bucket!r} does not exist; create it or correct --blobs"
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken"):
                return (
                    f"{where}: access denied ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "(or the credentials file) and that they may read and write the bucket"
                )
            return f"{where}: {code or status}: {err.get('Message', exc)}"
        return f"{where}: {exc}"

    def _check_bucket(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except (self._botocore_exc.BotoCoreError, self._botocore_exc.ClientError) as exc:
            self.close()
            raise BlobStoreError(self._explain(exc, "checking")) from None

    def _unavailable(self, exc: Exception, doing: str) -> BlobStoreUnavailable:
        return BlobStoreUnavailable(self._explain(exc, doing))

    # ------------------------------------------------------------------ BlobBackend

    def _missing(self, exc: Any) -> bool:
        """A ClientError that says the key is not there."""
        return bool(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404)

    def _head_size(self, sha256: str) -> int | None:
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except self._botocore_exc.ClientError as exc:
            if self._missing(exc):
                return None
            raise self._unavailable(exc, f"looking up blob {sha256} in") from None
        except self._botocore_exc.BotoCoreError as exc:
            raise self._unavailable(exc, f"looking up blob {sha256} in") from None
        return int(head["ContentLength"])

    def exists(self, sha256: str, size: int) -> bool:
        return self._head_size(sha256) == size

    def verify(self, sha256: str, size: int) -> bool:
        """The object is there with this size and hashes to its name (one GET: its length, then its bytes)."""
        digest = hashlib.sha256()
        read = 0
        try:
            try:
                got = self._s3.get_object(Bucket=self.bucket, Key=self.key(sha256))
            except self._botocore_exc.ClientError as exc:
                if self._missing(exc):
                    return False
                raise
            body = got["Body"]
            try:
                if int(got["ContentLength"]) != size:
                    return False
                for block in body.iter_chunks(READ_BYTES):
                    digest.update(block)
                    read += len(block)
            finally:
                body.close()
        except (self._botocore_exc.BotoCoreError, self._botocore_exc.ClientError) as exc:
            raise self._unavailable(exc, f"reading back blob {sha256} from") from None
        return read == size and digest.hexdigest() == sha256

    def publish(self, sha256: str, size: int, source: Path) -> None:
        if self.verify(sha256, size):
            return  # stored before (by another ingester, or by an attempt whose batch rolled back)
        try:
            if size < self._part_bytes:  # one PUT, without the transfer manager's threads per call
                with source.open("rb") as body:
                    self._s3.put_object(Bucket=self.bucket, Key=self.key(sha256), Body=body)
            else:
                self._s3.upload_file(str(source), self.bucket, self.key(sha256), Config=self._transfer)
        except (self._botocore_exc.BotoCoreError, self._botocore_exc.ClientError) as exc:
            raise self._unavailable(exc, f"uploading blob {sha256} to") from None
        except self._s3transfer_failed() as exc:
            raise self._unavailable(exc, f"uploading blob {sha256} to") from None
        if not self.verify(sha256, size):
            raise BlobStoreUnavailable(
                f"blob {sha256} uploaded to {self.describe()} does not read back as {size} bytes with that sha256;"
                " the object store is not keeping what it is given"
            )

    def _s3transfer_failed(self) -> type[Exception]:
        exceptions = require("boto3.exceptions", "central", "S3 blob storage")
        return exceptions.S3UploadFailedError  # type: ignore[no-any-return]

    def copy_to(self, sha256: str, dest: Path) -> None:
        try:
            self._s3.download_file(self.bucket, self.key(sha256), str(dest), Config=self._transfer)
        except (self._botocore_exc.BotoCoreError, self._botocore_exc.ClientError) as exc:
            raise self._unavailable(exc, f"downloading blob {sha256} from") from None

    def local_path(self, sha256: str) -> Path:
        """A downloaded, verified copy in a private temporary directory.

        Copies are kept, least recently used first out, up to ``FIELDCAP_S3_CACHE_BYTES`` (2 GiB),
        because some writers collect a whole session's paths before reading them (MCAP).
        """
        dest = self._cache / blob_key(sha256).rsplit("/", 1)[1]
        if sha256 in self._cached:
            self._cached.move_to_end(sha256)
            return dest
        self.copy_to(sha256, dest)
        fd = os.open(dest, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if hash_fd(fd, size) != sha256:
                raise BlobStoreUnavailable(f"blob {sha256} read from {self.describe()} does not hash to its name")
        finally:
            os.close(fd)
        self._cached[sha256] = size
        total = sum(self._cached.values())
        while total > self._cache_bytes and len(self._cached) > 1:
            old, old_size = self._cached.popitem(last=False)
            (self._cache / old).unlink(missing_ok=True)
            total -= old_size
        return dest

    def delete(self, sha256: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self.key(sha256))  # S3 answers 204 for a missing key
        except (self._botocore_exc.ClientError, self._botocore_exc.BotoCoreError) as exc:
            raise self._unavailable(exc, f"deleting blob {sha256} from") from None
        if self._cached.pop(sha256, None) is not None:
            (self._cache / sha256).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self._cache, ignore_errors=True)
        self._cached.clear()
