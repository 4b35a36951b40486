"""Which dataset category each of the model's labels stands for, checked before any run.

A model's label i is written into COCO results as a category id, and COCO evaluation matches it against the
ground truth of that id. With a model trained on another label space the numbers are silently meaningless (a
5-class checkpoint scored on an 80-category COCO file), so the two sides are compared first:

- without a category map, the model's own ids are used, and every dataset category that has annotations must
  be a model class of the same id; where both sides have real names they must agree (case-insensitive). The model
  may have more classes than the dataset (torchvision's 91-slot COCO head on a COCO subset). Generic names
  (``class_1``, ``class_2``: a torchvision file of unknown classes) and ``N/A`` slots (empty slots of the 91-slot
  head) are not real names; an ``N/A`` slot is not a class at all.
- with a category map (``--category-map MAP.json``: ``{"dataset category id or name": "model class name" or
  model category id}``), each mapped dataset category takes its model class's label; the model's other classes
  get ids no dataset category has (negative), so their detections count against nothing. Every dataset category
  that has annotations must be mapped.

Pure functions of plain data (names, ids, category dicts): no model or torch needed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Collection

from ..errors import RobustsegError
from ..fileio import read_json

PLACEHOLDER = "N/A"  # torchvision's empty slots of its 91-slot COCO head
_GENERIC = re.compile(r"class_\d+")  # what load_model names classes of a file that does not name them
_HOW_TO_MAP = "map them with --category-map MAP.json"


def load_category_map(path: str | Path) -> dict[str, str | int]:
    """A category map file, checked for shape: a JSON object whose keys are dataset category ids (as strings) or
    names and whose values are model class names (strings) or model category ids (integers). Whether the names and
    ids exist is checked against the model and the dataset by ``resolve_label_space``."""
    return check_category_map(read_json(path, "category map"), f"category map {path}")


def check_category_map(data: Any, where: str = "category map") -> dict[str, str | int]:
    """``data`` as a category map ({str: str | int}), or a one-line RobustsegError naming the first bad entry."""
    if not isinstance(data, dict):
        raise RobustsegError(f"{where}: must be a JSON object {{\"dataset category id or name\": \"model class "
                             f"name\" or model category id}}, not a {type(data).__name__}")
    if not data:
        raise RobustsegError(f"{where}: is empty; map at least one dataset category to a model class")
    out: dict[str, str | int] = {}
    for key, value in data.items():
        if _is_int(key):  # a dict built in Python may use integer ids as keys
            key = str(key)
        if not isinstance(key, str) or not key.strip():
            raise RobustsegError(f"{where}: key {_short(key)} must be a dataset category id or name")
        if not (_is_int(value) or (isinstance(value, str) and value.strip())):
            raise RobustsegError(f"{where}: {_short(key)} maps to {_short(value)}; a value must be a model class "
                                 f"name (a string) or a model category id (an integer)")
        if key in out:
            raise RobustsegError(f"{where}: {_short(key)} is mapped twice")
        out[key] = value
    return out


def resolve_label_space(model_class_names: list[str], model_category_ids: list[int],
                        dataset_categories: list[dict], category_map: dict | None = None, *,
                        annotated_ids: Collection[int] | None = None) -> list[int]:
    """The category id each model label is written as on this dataset (label i -> result[i - 1]).

    ``dataset_categories``: the COCO file's ``categories`` ({"id", "name"} dicts). ``annotated_ids``: the ids of
    the categories that have annotations (None: all of them count as annotated). Raises a one-line RobustsegError
    naming both sides when the model's labels cannot be read as this dataset's categories.
    """
    if len(model_class_names) != len(model_category_ids):
        raise RobustsegError(f"model has {len(model_class_names)} class names but {len(model_category_ids)} "
                             f"category ids")
    model = _ModelSide(list(model_class_names), [int(c) for c in model_category_ids])
    dataset = _DatasetSide(dataset_categories, annotated_ids)
    if category_map is None:
        return _same_space(model, dataset)
    return _mapped_space(model, dataset, check_category_map(category_map))


class _ModelSide:
    """The model's foreground classes: names and category ids by label (label i at index i - 1)."""

    def __init__(self, names: list[str], ids: list[int]):
        self.names, self.ids = names, ids
        self.slots = [i for i, n in enumerate(names) if n != PLACEHOLDER]  # indices of real classes
        self.slot_of_id = {ids[i]: i for i in self.slots}

    def describe(self) -> str:
        return f"model has {len(self.slots)} classes ({_preview([self.names[i] for i in self.slots])})"

    def slot(self, value: str | int) -> int:
        """The label index a map value (a class name or a category id) stands for."""
        if _is_int(value):
            if value not in self.slot_of_id:
                raise RobustsegError(f"category map: {value} is not a model category id ({self.describe()}, "
                                     f"ids {_preview([str(self.ids[i]) for i in self.slots], 3)})")
            return self.slot_of_id[value]
        hits = [i for i in self.slots if _same_name(self.names[i], value)]
        if len(hits) > 1:
            raise RobustsegError(f"category map: model class name {value!r} is ambiguous (labels "
                                 f"{', '.join(str(i + 1) for i in hits)}); use its category id")
        if not hits:
            hint = f"; a category id is a number: {value.strip()}, not \"{value}\"" if value.strip().isdigit() else ""
            raise RobustsegError(f"category map: {value!r} is not a model class ({self.describe()}){hint}")
        return hits[0]


class _DatasetSide:
    """The dataset's categories, and which of them have annotations (those must be readable from the model)."""

    def __init__(self, categories: list[dict], annotated_ids: Collection[int] | None):
        for c in categories:
            if not isinstance(c, dict) or not _is_int(c.get("id")):
                raise RobustsegError(f"dataset category {_short(c)}: needs an integer 'id'")
        self.categories = sorted(categories, key=lambda c: c["id"])
        annotated = None if annotated_ids is None else set(annotated_ids)
        self.annotated = [c for c in self.categories if annotated is None or c["id"] in annotated]

    def describe(self) -> str:
        return f"the dataset has {len(self.categories)} categories ({_preview([_label(c) for c in self.categories])})"

    def category_id(self, key: str) -> int:
        """The category a map key (an id as a string, or a name) stands for."""
        if re.fullmatch(r"-?\d+", key.strip()):
            cid = int(key)
            if any(c["id"] == cid for c in self.categories):
                return cid
        hits = [c["id"] for c in self.categories if isinstance(c.get("name"), str) and _same_name(c["name"], key)]
        if len(hits) > 1:
            raise RobustsegError(f"category map: dataset category name {key!r} is ambiguous (ids "
                                 f"{', '.join(map(str, hits))}); use its id")
        if not hits:
            raise RobustsegError(f"category map: {key!r} is not a dataset category ({self.describe()})")
        return hits[0]


def _same_space(model: _ModelSide, dataset: _DatasetSide) -> list[int]:
    """No map: the model's own ids, if every annotated dataset category is a model class of that id and name."""
    missing = [c for c in dataset.annotated if c["id"] not in model.slot_of_id]
    if missing:
        raise RobustsegError(f"{model.describe()} but {dataset.describe()}, {len(missing)} of them not in the "
                             f"model ({_preview([_with_id(c) for c in missing], 3)}); "
                             f"{_HOW_TO_MAP}")
    clashes = []
    for c in dataset.categories:
        slot = model.slot_of_id.get(c["id"])
        if slot is None or not _is_real_name(c.get("name")) or not _is_real_name(model.names[slot]):
            continue
        if not _same_name(model.names[slot], c["name"]):
            clashes.append(f"model class {slot + 1} {model.names[slot]!r} has category id {c['id']} but dataset "
                           f"category {c['id']} is {c['name']!r}")
    if clashes:
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise RobustsegError(f"{clashes[0]}{more}: the model and the dataset number their classes differently; "
                             f"{_HOW_TO_MAP}")
    return list(model.ids)


def _mapped_space(model: _ModelSide, dataset: _DatasetSide, category_map: dict[str, str | int]) -> list[int]:
    """With a map: mapped labels take their dataset category's id, the others ids no dataset category has."""
    category_of_slot: dict[int, int] = {}
    key_of_category: dict[int, str] = {}
    for key, value in category_map.items():
        cid, slot = dataset.category_id(key), model.slot(value)
        if cid in key_of_category:
            raise RobustsegError(f"category map: dataset category {cid} is mapped twice ({key_of_category[cid]!r} "
                                 f"and {key!r})")
        if slot in category_of_slot:
            raise RobustsegError(f"category map: model class {model.names[slot]!r} is mapped from two dataset "
                                 f"categories ({category_of_slot[slot]} and {cid}); a class can stand for one")
        key_of_category[cid], category_of_slot[slot] = key, cid
    unmapped = [c for c in dataset.annotated if c["id"] not in key_of_category]
    if unmapped:
        raise RobustsegError(f"category map: {len(unmapped)} dataset categories with annotations are not mapped "
                             f"({_preview([_with_id(c) for c in unmapped], 3)}); map each to "
                             f"one of the model's classes ({_preview([model.names[i] for i in model.slots], 3)})")
    below_all = min([0] + [c["id"] for c in dataset.categories])  # unmapped labels: ids below every real one
    return [category_of_slot.get(i, below_all - 1 - i) for i in range(len(model.ids))]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name.strip()) and name != PLACEHOLDER and not _GENERIC.fullmatch(name)


def _same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _label(category: dict) -> str:
    name = category.get("name")
    return name if isinstance(name, str) and name.strip() else f"id {category['id']}"


def _with_id(category: dict) -> str:
    name = _label(category)
    return name if name.startswith("id ") else f"{name} (id {category['id']})"


def _preview(names: list[str], shown: int = 2) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (list, dict)) else type(v).__name__
    return text if len(text) <= 60 else text[:57] + "..."
