"""Evaluation during training: clean and PGD bbox/segm AP on a few images, one row of the eval CSV per call.

Runs on rank 0 only, inside ``fork_rng`` so the training run's random stream (and an exact resume) is untouched.
"""
from __future__ import annotations

import time

import torch

from ..api import batches
from ..attacks import PGD
from ..attacks.objectives import make_objective
from ..data.coco import CocoDataset
from ..eval.coco_eval import evaluate, predict, to_coco_results


class PeriodicEval:
    def __init__(self, data: str, images: str, category_ids: list[int], limit: int = 16, eps: float = 4 / 255,
                 steps: int = 10, batch_size: int = 4, seed: int = 0):
        self.ds = CocoDataset(data, images, category_ids=category_ids, limit=limit)
        self.category_ids, self.eps, self.steps, self.bs, self.seed = category_ids, eps, steps, batch_size, seed

    def __call__(self, model: torch.nn.Module, it: int, device: torch.device) -> dict:
        t0 = time.time()
        clean, adv = [], []
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            for idx in batches(len(self.ds), self.bs):
                imgs = [self.ds.load_image(i).to(device) for i in idx]
                tgts = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in self.ds.target(i).items()}
                        for i in idx]
                ids = [self.ds.image_ids[i] for i in idx]
                x_adv = PGD(steps=self.steps)(model, imgs, tgts, [self.eps], make_objective("gt"), gen)[0]
                for name, xs, acc in (("clean", imgs, clean), ("pgd", x_adv, adv)):
                    for o, iid in zip(predict(model, xs), ids):
                        acc += to_coco_results(o, iid, self.category_ids)
        row = {"iteration": it, "images": len(self.ds), "eps": self.eps, "steps": self.steps}
        for name, res in (("clean", clean), ("pgd", adv)):
            m = evaluate(self.ds.coco, res, self.ds.image_ids, per_class=False)
            row.update({f"{name}_bbox_AP": m["bbox"]["AP"], f"{name}_segm_AP": m["segm"]["AP"]})
        row["seconds"] = round(time.time() - t0, 2)
        return row
