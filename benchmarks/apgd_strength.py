"""Attack strength at equal cost: bbox AP under PGD-10, APGD with 10 gradient evaluations and APGD with 50.

The shipped model, the first images of the default split (robustseg.data.synth.default_split), the default `gt`
objective, Linf eps 2/255 and 8/255, three seeds; AP by pycocotools (robustseg.eval.evaluate). The budget is
counted in gradient evaluations (forward + backward): PGD-10 and APGD(steps=10) make 10 each; APGD scores its
last iterate with one extra forward pass (no backward) and its judge (attacks/judge.py) predicts every iterate,
both reported as forward passes. PGD-10-judged is PGD-10's walk returning what the same judge picks.

    python benchmarks/apgd_strength.py                   # 16 images, ~30-60 min on 2 busy CPU cores
    python benchmarks/apgd_strength.py --images 4 --seeds 1 --eps 8/255   # smoke run
    python benchmarks/apgd_strength.py --images 32 --eps 2/255 --contenders PGD-10,APGD-10
    python benchmarks/apgd_strength.py --eps 2/255 --every-sample   # deterministic objective values
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

from robustseg.attacks import APGD, PGD  # noqa: E402
from robustseg.attacks.judge import damage_judge  # noqa: E402
from robustseg.models.modes import attack_mode  # noqa: E402
from robustseg.attacks.objectives import LOSS_NAMES, DetectorLoss, make_objective  # noqa: E402
from robustseg.data import CocoDataset  # noqa: E402
from robustseg.data.synth import default_split  # noqa: E402
from robustseg.eval.coco_eval import evaluate, predict, to_coco_results  # noqa: E402
from robustseg.models.checkpoint import load_model  # noqa: E402
from robustseg.utils import parse_eps  # noqa: E402

class JudgedPGD:
    """Not an attack of the package: PGD-10's walk, returning per image the iterate the same judge as APGD's finds
    most damaging (ties: the later one), to show how much of APGD's result is its judge rather than its walk."""

    def __init__(self, steps: int):
        self.pgd = PGD(steps=steps)

    def __call__(self, model, images, targets, epsilons, objective, generator, judge=None):
        with attack_mode(model):
            walk = self.pgd.iterates(model, images, targets, epsilons[0], objective, generator)
            next(walk)
            kept, damage = None, None
            for adv in walk:
                d = torch.nan_to_num(judge(model, adv), nan=-torch.inf)
                better = [True] * len(adv) if kept is None else (d >= damage).tolist()
                kept = [a if b else k for a, k, b in zip(adv, kept or adv, better)]
                damage = d if damage is None else torch.maximum(d, damage)
        return [kept]


CONTENDERS = {  # name -> (attack, gradient evaluations, forward passes with a backward or without) per image
    "PGD-10": (PGD(steps=10), 10, 10),
    "APGD-10": (APGD(steps=10), 10, 11 + 11),
    "APGD-50": (APGD(steps=50), 50, 51 + 51),
    "PGD-10-judged": (JudgedPGD(steps=10), 10, 10 + 10),
}


def bbox_ap(lm, ds, images, ids) -> float:
    outputs = predict(lm.model, images)
    results = [r for o, i in zip(outputs, ids) for r in to_coco_results(o, i, lm.category_ids)]
    return evaluate(ds.coco, results, ids, iou_types=("bbox",), per_class=False)["bbox"]["AP"]


def attacked(lm, ds, atk, images, targets, ids, eps: float, seed: int, batch: int, objective) -> list[torch.Tensor]:
    out = []
    for start in range(0, len(images), batch):
        torch.manual_seed(seed)  # the detector's samplers draw from torch's global generator
        gen = torch.Generator().manual_seed(seed * 1000 + start)
        judge = damage_judge(ds, ids[start:start + batch], lm.category_ids)  # as `robustseg attack` passes it
        out += atk(lm.model, images[start:start + batch], targets[start:start + batch], [eps], objective, gen,
                   judge=judge)[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped tiny model)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eps", default="2/255,8/255")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="of " + ", ".join(CONTENDERS))
    ap.add_argument("--every-sample", action="store_true", help="the gt objective with every anchor and proposal in "
                    "the loss (its values no longer depend on the samplers' draws) for every contender")
    args = ap.parse_args(argv)
    objective = DetectorLoss(tuple(LOSS_NAMES), sample_all=True) if args.every_sample else make_objective("gt")
    contenders = {k: CONTENDERS[k] for k in args.contenders.split(",")}
    C.header("APGD vs PGD at equal gradient evaluations (bbox AP, lower = stronger)", args)
    lm = load_model(C.model_path(args.model))
    ds = CocoDataset(*default_split(), category_ids=lm.category_ids, limit=args.images)
    images, targets, ids = [ds.load_image(i) for i in range(len(ds))], [ds.target(i) for i in range(len(ds))], \
        list(ds.image_ids)
    print(f"clean bbox AP {bbox_ap(lm, ds, images, ids):.4f} on {len(ids)} images", flush=True)
    for eps_text in args.eps.split(","):
        eps = parse_eps(eps_text, "linf")
        table = {}
        for name, (atk, grads, forwards) in contenders.items():
            aps, t0 = [], time.perf_counter()
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                aps.append(bbox_ap(lm, ds, attacked(lm, ds, atk, images, targets, ids, eps, seed, args.batch, objective), ids))
                print(f"  {eps_text} {name} seed {seed}: AP {aps[-1]:.4f}", flush=True)
            table[name] = (aps, grads, forwards, time.perf_counter() - t0)
        print(f"eps {eps_text}: contender, gradient evaluations, forward passes, AP per seed, mean, wall s")
        for name, (aps, grads, forwards, wall) in table.items():
            print(f"  {name:8s} {grads:3d} {forwards:3d}  {' '.join(f'{a:.4f}' for a in aps)}  "
                  f"mean {statistics.mean(aps):.4f}  {wall:.0f}s")
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
