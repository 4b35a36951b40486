"""Every JSON/TOML file the project reads fails as one RobustsegError line naming the file, whatever it holds:
nested deeper than Python's recursion limit, not text at all (a PNG), a directory, not UTF-8, or a value where
an id belongs. No model is loaded here."""
from __future__ import annotations

from pathlib import Path

import pytest

from robustseg.data.coco import CocoDataset, read_coco_json
from robustseg.data.validate import validate_coco
from robustseg.errors import DatasetError, RobustsegError, SuiteError
from robustseg.fileio import MAX_NESTING, nesting_depth, read_json, read_toml
from robustseg.patches.suite import load_patch_suite
from robustseg.suites import load_suite

DEEP = 100_000  # far past Python's recursion limit (1000)
PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"

JSON_FILES = {
    "deep-list.json": b"[" * DEEP + b"]" * DEEP,
    "deep-object.json": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep-inside-coco.json": b'{"images": [], "info": ' + b"[" * 300 + b"]" * 300 + b"}",  # parses, then refused
    "png.json": PNG_HEADER,
    "latin1.json": '{"images": [], "categories": [{"id": 1, "name": "caf\u00e9"}]}'.encode("latin-1"),
    "truncated.json": b'{"images": [ {"id": 1,',
    "huge-number.json": b'{"images": [], "n": ' + b"9" * 5000 + b"}",
}
TOML_FILES = {
    "deep-array.toml": b"x = " + b"[" * DEEP + b"]" * DEEP + b"\n",
    "deep-table.toml": b"x = " + b"{a = " * DEEP + b"1" + b"}" * DEEP + b"\n",
    "deep-below-limit.toml": b"x = " + b"[" * 200 + b"]" * 200 + b"\n",
    "png.toml": PNG_HEADER,
    "latin1.toml": 'name = "caf\u00e9"\n'.encode("latin-1"),
    "broken.toml": b"[[attack]\ntype = 'pgd'\n",
}


def _one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert str(path) in msg, msg  # names the file
    assert len(msg) < 400, msg
    return msg


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    for name, data in {**JSON_FILES, **TOML_FILES}.items():
        (root / name).write_bytes(data)
    (root / "a-directory.json").mkdir()
    (root / "a-directory.toml").mkdir()
    (root / "images").mkdir()
    return root


@pytest.mark.parametrize("name", [*JSON_FILES, "a-directory.json", "missing.json"])
def test_coco_reader_one_line(bad_files, name):
    path = bad_files / name
    with pytest.raises(DatasetError) as e:
        read_coco_json(path)
    msg = _one_line(e, path)
    assert msg.startswith(f"annotations {path}: ")
    with pytest.raises(DatasetError) as e:  # the dataset class goes through the same reader
        CocoDataset(path, bad_files / "images")
    _one_line(e, path)


@pytest.mark.parametrize("name", [*TOML_FILES, "a-directory.toml", "missing.toml"])
def test_suite_reader_one_line(bad_files, name):
    path = bad_files / name
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert _one_line(e, path).startswith("suite ")


@pytest.mark.parametrize("name", [*TOML_FILES, "a-directory.toml", "missing.toml"])
def test_patch_suite_reader_one_line(bad_files, name):
    path = bad_files / name
    with pytest.raises(SuiteError) as e:
        load_patch_suite(path)
    assert _one_line(e, path).startswith(f"patch suite {path}: ")


@pytest.mark.parametrize("name, expected", [
    ("deep-list.json", "nested more than"), ("deep-object.json", "nested more than"),
    ("deep-inside-coco.json", "nested more than"), ("png.json", "not UTF-8"), ("latin1.json", "not UTF-8"),
    ("truncated.json", "invalid JSON"), ("huge-number.json", "invalid JSON"),
    ("a-directory.json", "is a directory"), ("missing.json", "no such file"),
])
def test_read_json_says_what_is_wrong(bad_files, name, expected):
    with pytest.raises(RobustsegError, match=expected) as e:
        read_json(bad_files / name, "thing")
    assert _one_line(e, bad_files / name).startswith("thing ")


@pytest.mark.parametrize("name, expected", [
    ("deep-array.toml", "nested more than"), ("deep-table.toml", "nested more than"),
    ("deep-below-limit.toml", "nested more than"), ("png.toml", "not UTF-8"), ("latin1.toml", "not UTF-8"),
    ("broken.toml", "invalid TOML"), ("a-directory.toml", "is a directory"), ("missing.toml", "no such file"),
])
def test_read_toml_says_what_is_wrong(bad_files, name, expected):
    with pytest.raises(RobustsegError, match=expected) as e:
        read_toml(bad_files / name, "thing")
    _one_line(e, bad_files / name)


def test_unreadable_file_is_one_line(bad_files):
    import os
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = bad_files / "locked.json"
    path.write_text("{}")
    path.chmod(0)
    with pytest.raises(RobustsegError, match="cannot be read") as e:
        read_json(path, "thing")
    _one_line(e, path)


def test_good_files_and_the_depth_bound(tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text('{"a": [1, {"b": [2, 3]}]}')
    assert read_json(ok, "thing") == {"a": [1, {"b": [2, 3]}]}
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes('{"name": "caf\u00e9"}'.encode("utf-16"))  # JSON may be UTF-16 (RFC 8259), as before
    assert read_json(utf16, "thing") == {"name": "caf\u00e9"}
    toml = tmp_path / "ok.toml"
    toml.write_text('a = 1\n[b]\nc = [1, [2]]\n')
    assert read_toml(toml, "thing") == {"a": 1, "b": {"c": [1, [2]]}}
    at_limit = tmp_path / "at-limit.json"
    at_limit.write_text("[" * MAX_NESTING + "]" * MAX_NESTING)
    assert nesting_depth(read_json(at_limit, "thing")) == MAX_NESTING
    assert [nesting_depth(v) for v in (1, [], [1, [2]], {"a": {"b": []}})] == [0, 1, 2, 3]


def test_validation_never_recurses_or_crashes_on_odd_ids():
    deep = []
    for _ in range(5000):  # built in memory: deeper than any file read_json lets through
        deep = [deep]
    d = {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], "categories": [{"id": 1}],
         "annotations": [{"id": 1, "image_id": [1], "category_id": 1, "bbox": [0, 0, 1, 1]},
                         {"id": 2, "image_id": 1, "category_id": {"id": 1}, "bbox": [0, 0, 1, 1]},
                         {"id": 3, "image_id": deep, "category_id": 1, "bbox": [0, 0, 1, 1]}]}
    with pytest.raises(DatasetError) as e:
        validate_coco(d, "ann.json")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    assert "annotation 1: unknown image_id" in msg and "annotation 2: unknown category_id" in msg
    assert "annotation 3: unknown image_id" in msg
