"""The Python API behind the CLI: load, predict, evaluate. Usable from a notebook."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from .data.coco import CocoDataset
from .eval.coco_eval import evaluate, predict, to_coco_results
from .fileio import write_json
from .models.checkpoint import LoadedModel, load_model
from .utils import batches


def _as_loaded(model: str | Path | LoadedModel | None, device: str) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    return load_model(model, device=device)


def predict_dataset(lm: LoadedModel, ds: CocoDataset, batch_size: int = 4, device: str = "cpu",
                    progress: bool = True, desc: str = "predict") -> list[dict]:
    results: list[dict] = []
    for idx in tqdm(list(batches(len(ds), batch_size)), desc=desc, unit="batch", disable=not progress):
        images = [ds.load_image(i).to(device) for i in idx]
        for i, out in zip(idx, predict(lm.model, images)):
            results.extend(to_coco_results(out, ds.image_ids[i], lm.category_ids))
    return results


def evaluate_model(model=None, data: str | Path | None = None, images: str | Path | None = None, *,
                   limit: int | None = None, device: str = "cpu", batch_size: int = 4,
                   out: str | Path | None = None, progress: bool = True) -> dict:
    """COCO bbox/segm metrics of ``model`` (path, LoadedModel or None = shipped) on a dataset (None = synthetic)."""
    if data is None:
        from .data.synth import default_split
        data, images = default_split()
    lm = _as_loaded(model, device)
    ds = CocoDataset(data, images, category_ids=lm.category_ids, limit=limit)
    with torch.inference_mode():
        results = predict_dataset(lm, ds, batch_size, device, progress)
    metrics = evaluate(ds.coco, results, ds.image_ids)
    if out:
        write_json(Path(out) / "predictions.json", results)
        write_json(Path(out) / "metrics.json", metrics)
    return metrics
