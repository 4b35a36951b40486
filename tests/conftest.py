"""Shared fixtures: a tiny synthetic COCO dataset and a tiny untrained robustseg checkpoint.

Everything heavy is session-scoped and written once under pytest's session temp dir. Tests run single-threaded so
results are reproducible bit for bit (and so they share the 2-core machine politely).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustseg.data.synth import CATEGORIES, generate
from robustseg.models import build_model, save_checkpoint

from _helpers import PATCH_EVAL_SEED, PATCH_N_EVAL, PATCH_N_TRAIN, PATCH_TRAIN_SEED, load_trained_model

torch.set_num_threads(1)


def pytest_configure(config):
    # pycocotools' mask.decode warns on numpy 2 on every call; it is not ours and drowns the report
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")


SYNTH_N = 6
SYNTH_SIZE = 64
SYNTH_SEED = 3
TINY_CLASS_NAMES = [c["name"] for c in CATEGORIES]
TINY_CATEGORY_IDS = [c["id"] for c in CATEGORIES]


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> tuple[Path, Path]:
    """(annotations.json, images dir) of 6 synthetic 64x64 images. Treat as read-only."""
    root = tmp_path_factory.mktemp("synth")
    ann = generate(root, SYNTH_N, seed=SYNTH_SEED, size=SYNTH_SIZE)
    return Path(ann), root / "images"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained ``tiny`` robustseg checkpoint for the 3 synthetic classes (4 incl. background)."""
    torch.manual_seed(0)
    model = build_model("tiny", 4).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, arch="tiny", arch_cfg={}, class_names=TINY_CLASS_NAMES,
                    category_ids=TINY_CATEGORY_IDS, meta={"note": "untrained test model"})
    return path


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("tiny", 4)


@pytest.fixture(scope="module")
def lm():
    """The trained model (``_helpers.load_trained_model``), loaded afresh for each module that asks for it."""
    return load_trained_model()


@pytest.fixture(scope="session")
def splits(tmp_path_factory):
    """((train annotations, images), (held-out annotations, images)) of the patch tests (test_patches.py,
    test_physical_patches.py): 32 images of a seed-31 split and 32 of a seed-41 split. Treat as read-only."""
    root = tmp_path_factory.mktemp("patch_splits")
    train = generate(root / "train", PATCH_N_TRAIN, seed=PATCH_TRAIN_SEED)
    held = generate(root / "eval", PATCH_N_EVAL, seed=PATCH_EVAL_SEED)
    return (train, root / "train" / "images"), (held, root / "eval" / "images")
