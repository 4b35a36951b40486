"""Harness overhead of robustseg's PGD: its wall time / (k x a bare forward+backward of the same model).

The bare loop is the physical floor of a k-step gradient attack: in ``attack_mode(model)``, k times
``loss = sum(model(xs, targets).values()); torch.autograd.grad(loss, xs)`` on the same images and batch size.
robustseg's ``PGD(steps=k, random_start=False)`` does the same k forward+backward passes plus its own work
(sign step, projection, clipping, NaN guard, mode switching). Target: ratio <= 1.05.

    python benchmarks/overhead.py                       # shipped tiny model, 16 synthetic images, PGD-10
    python benchmarks/overhead.py --batch-sizes 1,4,16 --repeats 7
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import torch  # noqa: E402

from robustseg.attacks import PGD  # noqa: E402
from robustseg.attacks.base import clip_image, project  # noqa: E402
from robustseg.attacks.objectives import DetectorLoss  # noqa: E402
from robustseg.attacks.steps import ascent_step  # noqa: E402
from robustseg.models.checkpoint import load_model  # noqa: E402
from robustseg.models.modes import attack_mode  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped tiny model)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-sizes", default="4", help="comma-separated, e.g. 1,4,16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    eps = float(eval(args.eps, {}))  # "8/255"
    C.header("overhead: robustseg PGD-k vs k x bare forward+backward", args)
    lm = load_model(C.model_path(args.model), device=args.device)
    model = lm.model.to(args.device)
    _, images, targets = C.load_set(lm, args.images, device=args.device)
    k = args.steps
    objective = DetectorLoss()  # all five losses, as the bare loop's sum(model(...).values())
    attack = PGD(steps=k, random_start=False)
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        groups = [([images[i] for i in idx], [targets[i] for i in idx]) for idx in C.chunks(len(images), bs)]

        def bare():
            for imgs, tgts in groups:
                with attack_mode(model):
                    for _ in range(k):
                        xs = [x.detach().requires_grad_(True) for x in imgs]
                        loss = sum(model(xs, tgts).values())
                        torch.autograd.grad(loss, xs)

        def robustseg():
            for imgs, tgts in groups:
                attack(model, imgs, tgts, [eps], objective)

        def hand_pgd():  # the bare loop plus a minimal in-line Linf update: same image trajectory as PGD
            alpha = 2.5 * eps / k
            for imgs, tgts in groups:
                with attack_mode(model):
                    adv = [x.detach() for x in imgs]
                    for _ in range(k):
                        xs = [a.requires_grad_(True) for a in adv]
                        loss = sum(model(xs, tgts).values())
                        grads = torch.autograd.grad(loss, xs)
                        with torch.no_grad():
                            adv = [(x + (a + alpha * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
                                   for x, a, g in zip(imgs, xs, grads)]

        def update_only():  # robustseg's per-step work without the model: what the harness adds per step
            alpha = 2.5 * eps / k
            for imgs, _ in groups:
                adv = [x.clone() for x in imgs]
                for _ in range(k):
                    grads = [torch.nan_to_num(torch.randn_like(x), nan=0.0, posinf=0.0, neginf=0.0) for x in adv]
                    adv = [clip_image(x + project(a + ascent_step(g, alpha, "linf") - x, eps, "linf"))
                           for x, a, g in zip(imgs, adv, grads)]

        print(f"-- batch size {bs}: {len(images)} images, {len(groups)} batches, PGD-{k}, eps {args.eps}")
        t = C.interleaved({"bare": bare, "robustseg": robustseg, "hand_pgd": hand_pgd}, args.repeats, args.warmup,
                          args.device)
        t = C.keep_quiet(t)
        upd = C.interleaved({"update_only": update_only}, args.repeats, 1, args.device)["update_only"]
        ratio = C.med(t["robustseg"]) / C.med(t["bare"])
        paired = C.med([r / b for r, b in zip(t["robustseg"], t["bare"])])
        print(f"   bare k x fwd+bwd : {C.spread(t['bare'])}")
        print(f"   robustseg PGD-{k} : {C.spread(t['robustseg'])}")
        print(f"   hand-written PGD-{k} (bare loop + in-line update): {C.spread(t['hand_pgd'])}")
        print(f"   update-only (no model; includes randn for fake gradients): {C.spread(upd)}")
        hand = C.med(t["robustseg"]) / C.med(t["hand_pgd"])
        print(f"   ratio robustseg / bare = {ratio:.3f} (median of per-round ratios {paired:.3f}); "
              f"robustseg / hand-written PGD = {hand:.3f}")
        rows.append((bs, C.med(t["bare"]), C.med(t["robustseg"]), ratio, paired, hand,
                     len(images) * k / C.med(t["bare"])))
    print("\nsummary (target: ratio <= 1.05)")
    print(f"{'batch':>5} {'bare s':>8} {'robustseg s':>12} {'ratio':>7} {'paired':>7} {'vs hand':>8} "
          f"{'fwd+bwd img/s':>14}  verdict")
    for bs, b, r, ratio, paired, hand, ips in rows:
        print(f"{bs:>5} {b:>8.3f} {r:>12.3f} {ratio:>7.3f} {paired:>7.3f} {hand:>8.3f} {ips:>14.1f}  "
              f"{'met' if ratio <= 1.05 else 'MISSED'}")
    C.footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
