"""Helpers for the attack-engine tests (test_attacks.py, test_suites.py, test_attack_run.py).

The attack tests need a *trained* model: attacks on an untrained detector prove nothing. They use the shipped
model (``robustseg.models.SHIPPED``); while it does not exist yet (it is being trained), the checkpoint named by
the environment variable ``ROBUSTSEG_TEST_MODEL`` stands in. With neither, the tests fail loudly; they never skip.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd
import pytest

from robustseg.models import SHIPPED, LoadedModel, load_model

ENV_MODEL = "ROBUSTSEG_TEST_MODEL"
# dataset seeds of these tests: never 0 (the shipped model's training split) nor 12345 (the default eval split)
RUN_DATA_SEED = 7
ATTACK_DATA_SEED = 21
# the patch tests' split (conftest.py ``splits``): train on one synthetic split, judge on another
PATCH_TRAIN_SEED, PATCH_EVAL_SEED = 31, 41
PATCH_N_TRAIN, PATCH_N_EVAL = 32, 32


def trained_model_path() -> Path:
    """The shipped model if it exists, else $ROBUSTSEG_TEST_MODEL; raises (never skips) when neither does."""
    if SHIPPED.is_file():
        return SHIPPED
    env = os.environ.get(ENV_MODEL)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"${ENV_MODEL}={env} is not a file")
        return path
    raise FileNotFoundError(f"the attack tests need a trained model: {SHIPPED} does not exist and ${ENV_MODEL} "
                            f"is not set (point it at a trained robustseg checkpoint)")


def load_trained_model() -> LoadedModel:
    return load_model(trained_model_path())


def metric(df: pd.DataFrame, point: str, iou_type: str = "bbox", name: str = "AP") -> float:
    """One value of a metrics.csv frame; exactly one row must match."""
    rows = df[(df.point == point) & (df.iou_type == iou_type) & (df.metric == name)]
    assert len(rows) == 1, f"{len(rows)} rows for {point}/{iou_type}/{name}"
    return float(rows.value.iloc[0])


@contextlib.contextmanager
def small_sanity_probe():
    """Shrink the runner's masking probe (PGD-20 at a moderate eps on 8 images, and the noise ladder,
    robustseg/sanity.py) to one step on one image at one eps: at full size it would take longer than everything
    these tests check."""
    from robustseg import sanity
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sanity, "PROBE", {**sanity.PROBE, "steps": 1, "images": 1, "ladder": sanity.PROBE["ladder"][-2:-1]})
        yield
