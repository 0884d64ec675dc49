"""storage.iter_uris: the streaming listing gives what list_uris gives, in the same order on S3, across
S3's listing pages, without holding the whole listing."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import pytest

from htr_ray.io import storage


def test_iter_uris_local_matches_list_uris(tmp_path):
    for rel in ("b/2.png", "b/1.PNG", "a/x.tif", "top.jpg", "notes.txt", ".hidden.png", "a/.tmp-part.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    it = storage.iter_uris(str(tmp_path), suffixes=(".png", ".tif", ".jpg"))
    assert inspect.isgenerator(it)
    got = list(it)
    assert sorted(got) == storage.list_uris(str(tmp_path), suffixes=(".png", ".tif", ".jpg"))
    assert len(got) == 4
    with pytest.raises(storage.StorageError):
        list(storage.iter_uris(str(tmp_path / "missing")))


def test_iter_uris_s3_streams_pages_in_key_order(s3_bucket):
    keys = [f"scans/{i:05d}.png" for i in range(23)] + ["scans/readme.txt", "other/0.png"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: storage.write_bytes(f"{s3_bucket}/{k}", b""), keys))
    prefix = f"{s3_bucket}/scans/"
    it = storage.iter_uris(prefix, suffixes=(".png",), page_size=5)  # 5 LIST pages
    first = next(it)  # the first page arrives before the rest is listed
    rest = list(it)
    assert [first] + rest == storage.list_uris(prefix, suffixes=(".png",))
    assert len(rest) + 1 == 23
    assert list(storage.iter_uris(f"{s3_bucket}/nothing-here/")) == []
