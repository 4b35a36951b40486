"""The label-space check (robustseg/data/labels.py): a model's labels are read as a dataset's categories only when
the two agree, or through an explicit category map; every refusal is one line naming both sides."""
from __future__ import annotations

import json

import pytest
from torchvision.models._meta import _COCO_CATEGORIES

import robustseg
from robustseg.data.coco import read_coco_json
from robustseg.data.labels import check_category_map, load_category_map, resolve_label_space
from robustseg.data.synth import default_split
from robustseg.errors import RobustsegError

COCO91_NAMES = list(_COCO_CATEGORIES[1:])            # torchvision's 91-slot head: 80 names and 10 "N/A"
COCO91_IDS = list(range(1, len(_COCO_CATEGORIES)))
COCO80 = [{"id": i, "name": n, "supercategory": "x"} for i, n in enumerate(_COCO_CATEGORIES) if i and n != "N/A"]
SHAPES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]


def _refused(*args, **kw) -> str:
    with pytest.raises(RobustsegError) as e:
        resolve_label_space(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500, msg
    return msg


def test_shipped_model_on_the_default_split_is_unchanged():
    lm = robustseg.load_model(None)
    ann, _ = default_split()
    cats = read_coco_json(ann)["categories"]
    assert resolve_label_space(lm.class_names, lm.category_ids, cats) == lm.category_ids


def test_91_slot_coco_model_on_an_80_category_coco_file():
    assert len(COCO80) == 80
    assert resolve_label_space(COCO91_NAMES, COCO91_IDS, COCO80) == COCO91_IDS
    subset = [c for c in COCO80 if c["name"] in ("person", "dog", "toaster")]  # more model classes: fine
    assert resolve_label_space(COCO91_NAMES, COCO91_IDS, subset) == COCO91_IDS
    upper = [dict(c, name=c["name"].upper()) for c in COCO80]  # names agree case-insensitively
    assert resolve_label_space(COCO91_NAMES, COCO91_IDS, upper) == COCO91_IDS


def test_5_class_checkpoint_on_coco_is_refused_naming_both_sides():
    names, ids = [f"class_{i}" for i in range(1, 5)], [1, 2, 3, 4]
    msg = _refused(names, ids, COCO80)
    assert msg.startswith("model has 4 classes (class_1, class_2, ...) but the dataset has 80 categories "
                          "(person, bicycle, ...), 76 of them not in the model"), msg
    assert "airplane (id 5)" in msg and msg.endswith("map them with --category-map MAP.json")


def test_only_annotated_categories_must_be_in_the_model():
    names, ids = [f"class_{i}" for i in range(1, 5)], [1, 2, 3, 4]
    assert resolve_label_space(names, ids, COCO80, annotated_ids={1, 3}) == ids
    msg = _refused(names, ids, COCO80, annotated_ids={1, 18})
    assert "1 of them not in the model (dog (id 18))" in msg


def test_a_placeholder_slot_is_not_a_class():
    street_sign = [{"id": 12, "name": "street sign"}]  # id 12 is an "N/A" slot of torchvision's head
    assert "not in the model (street sign (id 12))" in _refused(COCO91_NAMES, COCO91_IDS, street_sign)


def test_same_ids_different_names_are_refused():
    msg = _refused(["cat", "dog", "bird"], [1, 2, 3], SHAPES)
    assert msg.startswith("model class 1 'cat' has category id 1 but dataset category 1 is 'circle' (and 2 more)")
    assert "--category-map" in msg
    # generic names on either side cannot disagree
    assert resolve_label_space(["class_1", "class_2", "class_3"], [1, 2, 3], SHAPES) == [1, 2, 3]
    assert resolve_label_space(["cat", "dog", "bird"], [1, 2, 3], [{"id": 1}, {"id": 2}]) == [1, 2, 3]


def test_a_map_fixes_a_mismatch():
    names, ids = ["cat", "dog", "bird", "fish"], [1, 2, 3, 4]
    got = resolve_label_space(names, ids, SHAPES, {"circle": "dog", "2": "cat", "triangle": 4})
    assert got[:2] == [2, 1] and got[3] == 3   # label 1 (cat) -> square, 2 (dog) -> circle, 4 (fish) -> triangle
    assert got[2] < 0 and got[2] not in (1, 2, 3)  # bird is unmapped: an id no dataset category has
    five = [f"class_{i}" for i in range(1, 5)]
    coco_map = {"person": "class_1", "car": "class_2", "dog": "class_3", "cat": "class_4"}
    assert resolve_label_space(five, [1, 2, 3, 4], COCO80, coco_map, annotated_ids={1, 3, 17, 18}) == [1, 3, 18, 17]
    negative = [{"id": -5, "name": "odd"}, {"id": 7, "name": "seven"}]
    got = resolve_label_space(["a", "b", "c"], [1, 2, 3], negative, {"odd": "a", "seven": "b"})
    assert got[:2] == [-5, 7] and got[2] < -5  # below every dataset id, even negative ones


@pytest.mark.parametrize("category_map, expected", [
    ({"circle": "cat"}, "2 dataset categories with annotations are not mapped (square (id 2), triangle (id 3))"),
    ({"circle": "cat", "square": "dog", "triangle": "horse"}, "'horse' is not a model class (model has 3 classes"),
    ({"circle": "cat", "square": "dog", "hexagon": "bird"}, "'hexagon' is not a dataset category (the dataset has 3"),
    ({"circle": "cat", "square": "dog", "triangle": 9}, "9 is not a model category id"),
    ({"circle": "cat", "square": "dog", "triangle": "3"}, "a category id is a number: 3"),
    ({"circle": "cat", "1": "dog", "triangle": "bird"}, "dataset category 1 is mapped twice"),
    ({"circle": "cat", "square": "cat", "triangle": "bird"}, "model class 'cat' is mapped from two dataset categories"),
])
def test_bad_maps_are_refused(category_map, expected):
    assert expected in _refused(["cat", "dog", "bird"], [1, 2, 3], SHAPES, category_map)


def test_map_to_a_placeholder_slot_is_refused():
    assert "'N/A' is not a model class" in _refused(COCO91_NAMES, COCO91_IDS, COCO80[:1], {"person": "N/A"})
    assert "12 is not a model category id" in _refused(COCO91_NAMES, COCO91_IDS, COCO80[:1], {"person": 12})


BAD_MAP_FILES = {
    "not-json.json": (b"\x89PNG\r\n\x1a\n", "invalid JSON"),
    "broken.json": (b'{"circle": ', "invalid JSON"),
    "list.json": (b'["circle", "cat"]', "must be a JSON object"),
    "empty.json": (b"{}", "is empty"),
    "bad-value.json": (b'{"circle": ["cat"]}', "a value must be a model class name"),
    "bool-value.json": (b'{"circle": true}', "a value must be a model class name"),
    "blank-key.json": (b'{" ": "cat"}', "must be a dataset category id or name"),
    "deep.json": (b'{"a":' * 100_000 + b'"x"' + b"}" * 100_000, "nested more than"),
    "deep-list.json": (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
}


@pytest.mark.parametrize("name", BAD_MAP_FILES)
def test_bad_map_files_are_one_line_errors(tmp_path, name):
    data, expected = BAD_MAP_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(RobustsegError, match=expected) as e:
        load_category_map(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and len(str(e.value)) < 400


def test_map_file_with_unknown_names_fails_at_resolve(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"circle": "cat", "square": "unicorn", "3": 3}))
    m = load_category_map(path)
    assert m == {"circle": "cat", "square": "unicorn", "3": 3}
    assert "'unicorn' is not a model class" in _refused(["cat", "dog", "bird"], [1, 2, 3], SHAPES, m)
    for missing in (tmp_path / "nope.json", tmp_path):
        with pytest.raises(RobustsegError, match="no such file|is a directory"):
            load_category_map(missing)


def test_map_given_as_a_python_dict_is_checked_too():
    assert check_category_map({1: "cat"}) == {"1": "cat"}  # integer keys from Python code become id strings
    assert "must be a JSON object" in _refused(["cat"], [1], SHAPES[:1], ["circle"])
    assert "model has 2 class names but 1 category ids" in _refused(["a", "b"], [1], SHAPES)
