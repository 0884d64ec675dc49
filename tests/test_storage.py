import os
import threading

import pyarrow.parquet as pq
import pytest

from htr_ray.io import storage


def test_parse_and_join():
    assert storage.parse("s3://b/k/x.png").bucket == "b"
    assert storage.parse("s3://b/k/x.png").key == "k/x.png"
    assert storage.parse("file:///tmp/a").path == "/tmp/a"
    assert storage.join("s3://b/root/", "train", "part-00000.parquet") == "s3://b/root/train/part-00000.parquet"
    with pytest.raises(storage.StorageError, match="unsupported URI scheme"):
        storage.parse("gs://bucket/x")
    with pytest.raises(storage.StorageError, match="bad S3 URI"):
        storage.parse("s3:///nobucket")


@pytest.mark.parametrize("kind", ["local", "file", "s3"])
def test_roundtrip_list_and_filters(kind, tmp_path, request):
    if kind == "s3":
        root = request.getfixturevalue("s3_bucket") + "/pre"
    elif kind == "file":
        root = f"file://{tmp_path}/pre"
    else:
        root = str(tmp_path / "pre")
    storage.write_bytes(storage.join(root, "a.png"), b"A")
    storage.write_bytes(storage.join(root, "sub", "b.JPG"), b"BB")
    storage.write_bytes(storage.join(root, "sub", "c.txt"), b"C")
    assert storage.read_bytes(storage.join(root, "sub", "b.JPG")) == b"BB"
    assert storage.size(storage.join(root, "sub", "b.JPG")) == 2
    assert storage.exists(storage.join(root, "a.png"))
    assert not storage.exists(storage.join(root, "missing.png"))
    all_uris = storage.list_uris(root)
    assert [storage.basename(u) for u in all_uris] == ["a.png", "b.JPG", "c.txt"]
    images = storage.list_uris(root, suffixes=(".png", ".jpg"))
    assert [storage.basename(u) for u in images] == ["a.png", "b.JPG"]
    storage.delete(storage.join(root, "a.png"))
    assert not storage.exists(storage.join(root, "a.png"))


def test_missing_object_error_is_clear_and_has_no_secret(s3_bucket):
    with pytest.raises(storage.StorageError) as err:
        storage.read_bytes(f"{s3_bucket}/nope.png")
    msg = str(err.value)
    assert "nope.png" in msg and "NoSuchKey" in msg
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in msg
    assert os.environ["AWS_ACCESS_KEY_ID"] not in msg
    with pytest.raises(storage.StorageError, match="no such folder"):
        storage.list_uris("/definitely/not/here")


def test_local_write_is_atomic(tmp_path):
    """A reader polling the file while it is rewritten sees only complete versions."""
    target = str(tmp_path / "obj.bin")
    versions = [bytes([i]) * 2_000_000 for i in range(1, 6)]
    storage.write_bytes(target, versions[0])
    seen = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            data = storage.read_bytes(target)
            seen.add((len(data), data[0], data[-1]))

    t = threading.Thread(target=reader)
    t.start()
    for v in versions[1:]:
        storage.write_bytes(target, v)
    stop.set()
    t.join()
    assert all(length == 2_000_000 and first == last for length, first, last in seen)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_pyarrow_filesystem_on_s3(s3_bucket):
    import pyarrow as pa

    uri = f"{s3_bucket}/tables/t.parquet"
    fs, path = storage.pyarrow_filesystem(uri)
    pq.write_table(pa.table({"x": [1, 2, 3]}), path, filesystem=fs)
    assert storage.exists(uri)
    assert pq.read_table(path, filesystem=fs)["x"].to_pylist() == [1, 2, 3]
