"""The one labels.tsv reader: rows, bad lines with where they are, the split by form."""

from __future__ import annotations

from htr_ray.data import labels


def test_rows_bad_lines_and_paths(tmp_path):
    (tmp_path / "labels.tsv").write_text(
        "line_id\timage\ttranscription\n"
        "a01-000u-01\timages/a01-000u/a01-000u-01.png\tA MOVE to stop\n"
        "\n"
        "a01-000u-02\timages/a01-000u/a01-000u-02.png\n"
        "b02-001-10\t/abs/b.png\tsecond\tfield too many\n"
        "b02-001-11\ts3://bucket/b.png\tthird\r\n", encoding="utf-8")
    rows, bad = labels.read(str(tmp_path))
    assert [r.line_id for r in rows] == ["a01-000u-01", "b02-001-11"]
    assert rows[0].text == "A MOVE to stop" and rows[0].form == "a01-000u" and rows[0].lineno == 2
    assert rows[0].image_uri() == str(tmp_path / "images" / "a01-000u" / "a01-000u-01.png")
    assert rows[1].image_uri() == "s3://bucket/b.png" and rows[1].text == "third" and rows[1].form == "b02-001"
    assert [b.where for b in bad] == [f"{tmp_path}/labels.tsv:4", f"{tmp_path}/labels.tsv:5"]
    assert "got 2" in bad[0].message and "got 4" in bad[1].message


def test_the_split_is_by_form_and_matches_the_shared_data(shared_data):
    rows, bad = labels.read(str(shared_data / "iam_ondb_lines"))
    assert not bad and len(rows) == 10194
    splits: dict[str, set] = {}
    for r in rows:
        splits.setdefault(r.form, set()).add(r.split())
    assert all(len(s) == 1 for s in splits.values())  # no form on two sides
    test = labels.read(str(shared_data / "iam_ondb_lines"), split="test")[0]
    assert len(test) == 439 and {r.split() for r in test} == {"test"}  # the held-out forms the docs cite
