"""Storage by URI: local paths, ``file://`` and ``s3://bucket/key``.

Every input and output of htr-ray is a URI handled here, so that the same job runs against a laptop
folder, AWS S3, MinIO, Ceph or the loopback test server. S3 settings come only from the standard AWS
environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``), which boto3 and pyarrow read themselves; nothing here ever formats a credential into
a log line, an error or a repr.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"


class StorageError(OSError):
    """A URI could not be read, listed or written. The message names the URI, never a credential."""


@dataclass(frozen=True)
class Location:
    """A parsed URI: ``scheme`` is ``"file"`` or ``"s3"``; ``path`` is a local path or ``bucket/key``."""

    scheme: str
    path: str

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        parts = self.path.split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    def uri(self) -> str:
        return f"s3://{self.path}" if self.scheme == "s3" else self.path


def parse(uri: str | os.PathLike) -> Location:
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        path = uri[len("s3://"):]
        if not path or path.startswith("/"):
            raise StorageError(f"bad S3 URI {uri!r}: expected s3://bucket/key")
        return Location("s3", path)
    if uri.startswith("file://"):
        return Location("file", os.path.abspath(urlparse(uri).path))
    if "://" in uri:
        raise StorageError(f"unsupported URI scheme in {uri!r} (use a path, file:// or s3://)")
    return Location("file", os.path.abspath(os.path.expanduser(uri)))


def is_s3(uri: str) -> bool:
    return os.fspath(uri).startswith("s3://")


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/' (S3) or the OS separator (local), keeping the scheme."""
    base = os.fspath(base)
    if is_s3(base) or base.startswith("file://"):
        out = base.rstrip("/")
        for p in parts:
            out += "/" + str(p).strip("/")
        return out
    return os.path.join(base, *[str(p) for p in parts])


def basename(uri: str) -> str:
    return os.fspath(uri).rstrip("/").rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------------------- S3 clients

_local = threading.local()


def _s3_settings() -> tuple[str | None, str]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return endpoint, region


def s3_client():
    """A boto3 S3 client from the environment, one per thread and per settings (boto3 clients are
    thread-safe but creating one costs ~50 ms, and tests change the endpoint between sessions)."""
    import boto3
    from botocore.config import Config

    endpoint, region = _s3_settings()
    key = (endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID", ""))
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    if key not in cache:
        cache[key] = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )
    return cache[key]


def _s3_error(action: str, loc: Location, exc: Exception) -> StorageError:
    # botocore error messages carry the operation and the error code, never the keys.
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    return StorageError(f"{action} s3://{loc.path} failed: {code}")


# ------------------------------------------------------------------------------------------ reading


def read_bytes(uri: str) -> bytes:
    loc = parse(uri)
    if loc.scheme == "file":
        try:
            with open(loc.path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise StorageError(f"reading {loc.path} failed: {exc.strerror or exc}") from exc
    try:
        return s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
    except Exception as exc:  # botocore raises several unrelated classes
        raise _s3_error("reading", loc, exc) from exc


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def exists(uri: str) -> bool:
    loc = parse(uri)
    if loc.scheme == "file":
        return os.path.exists(loc.path)
    try:
        s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        return True
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _s3_error("checking", loc, exc) from exc


def size(uri: str) -> int:
    loc = parse(uri)
    if loc.scheme == "file":
        return os.path.getsize(loc.path)
    try:
        return int(s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])
    except Exception as exc:
        raise _s3_error("checking", loc, exc) from exc


def list_uris(prefix: str, suffixes: Sequence[str] | None = None, recursive: bool = True) -> list[str]:
    """Every object/file under ``prefix`` (a folder or key prefix), sorted, optionally only those whose
    name ends with one of ``suffixes`` (case-insensitive). Hidden files and in-progress temporary files
    (names starting with '.') are skipped. Holds the whole listing: for archives of millions of keys,
    :func:`iter_uris` streams it instead."""
    return sorted(iter_uris(prefix, suffixes, recursive))


def iter_uris(prefix: str, suffixes: Sequence[str] | None = None, recursive: bool = True,
              page_size: int = 1000) -> Iterator[str]:
    """The URIs :func:`list_uris` returns, one at a time as the listing arrives, holding one listing
    page (S3: 1,000 keys) or one folder at a time. Order: S3's key order (UTF-8 binary, the order
    ``list_uris`` sorts s3 URIs into); locally, folders walked in sorted order, each folder's files
    sorted. ``page_size``: keys per S3 LIST request (at most 1,000). Raises :class:`StorageError` when
    the prefix cannot be listed."""
    loc = parse(prefix)
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None

    def keep(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        if not base or base.startswith("."):
            return False
        return wanted is None or base.lower().endswith(wanted)

    if loc.scheme == "file":
        if os.path.isfile(loc.path):
            if keep(loc.path):
                yield loc.path
            return
        if not os.path.isdir(loc.path):
            raise StorageError(f"listing {loc.path} failed: no such folder")
        if recursive:
            for root, dirs, files in os.walk(loc.path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                yield from (os.path.join(root, f) for f in sorted(files) if keep(f))
        else:
            yield from (os.path.join(loc.path, f) for f in sorted(os.listdir(loc.path))
                        if keep(f) and os.path.isfile(os.path.join(loc.path, f)))
        return

    kwargs = {"Bucket": loc.bucket, "Prefix": loc.key}
    if not recursive:
        kwargs["Delimiter"] = "/"
    try:
        pages = iter(s3_client().get_paginator("list_objects_v2").paginate(
            **kwargs, PaginationConfig={"PageSize": max(1, min(int(page_size), 1000))}))
    except Exception as exc:
        raise _s3_error("listing", loc, exc) from exc
    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except Exception as exc:
            raise _s3_error("listing", loc, exc) from exc
        for obj in page.get("Contents", []):
            if keep(obj["Key"]):
                yield f"s3://{loc.bucket}/{obj['Key']}"


# ------------------------------------------------------------------------------------------ writing


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a reader sees either the old object or the whole new one, never a part.

    Local files are written to a hidden temporary file in the same folder and renamed into place
    (rename is atomic within a file system). An S3 PUT is atomic by itself.
    """
    loc = parse(uri)
    if loc.scheme == "file":
        folder = os.path.dirname(loc.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, loc.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return
    try:
        s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
    except Exception as exc:
        raise _s3_error("writing", loc, exc) from exc


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def delete(uri: str) -> None:
    loc = parse(uri)
    if loc.scheme == "file":
        try:
            os.unlink(loc.path)
        except FileNotFoundError:
            pass
        return
    try:
        s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
    except Exception as exc:
        raise _s3_error("deleting", loc, exc) from exc


def copy_tree(src: str, dst: str) -> list[str]:
    """Copy every file under ``src`` to the same relative path under ``dst`` (any scheme to any)."""
    written = []
    src_root = parse(src)
    for uri in list_uris(src):
        rel = parse(uri).path[len(src_root.path):].lstrip("/").lstrip(os.sep)
        target = join(dst, *rel.replace(os.sep, "/").split("/"))
        write_bytes(target, read_bytes(uri))
        written.append(target)
    return written


# ---------------------------------------------------------------------------------- pyarrow bridge


def pyarrow_filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for ``uri``: what Ray Data's readers and writers take."""
    import pyarrow.fs as pafs

    loc = parse(uri)
    if loc.scheme == "file":
        return pafs.LocalFileSystem(), loc.path
    return _pyarrow_s3(*_s3_settings()), loc.path


@functools.lru_cache(maxsize=8)
def _pyarrow_s3(endpoint: str | None, region: str):
    import pyarrow.fs as pafs

    kwargs = {"region": region}  # without it pyarrow asks AWS where the bucket lives
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    # Keys are read by pyarrow from the environment (AWS_ACCESS_KEY_ID, ...), as boto3 does.
    return pafs.S3FileSystem(**kwargs)


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an s3:// URI if it does not exist (tests and demos; production buckets
    exist already)."""
    loc = parse(uri)
    if loc.scheme != "s3":
        os.makedirs(loc.path, exist_ok=True)
        return
    client = s3_client()
    try:
        client.head_bucket(Bucket=loc.bucket)
    except Exception:
        client.create_bucket(Bucket=loc.bucket)


def iter_read(uris: Iterable[str]):
    """(uri, bytes or StorageError) for each URI: a read failure is data for the caller to count."""
    for uri in uris:
        try:
            yield uri, read_bytes(uri)
        except StorageError as exc:
            yield uri, exc
