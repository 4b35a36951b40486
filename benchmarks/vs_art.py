"""robustseg PGD vs IBM ART's PyTorchObjectDetector + ProjectedGradientDescent: same attack, timed side by side.

Same model, images, targets (boxes, labels and masks), eps, step size, steps, losses (all five, loss_mask
included), batch size; no random start on either side (ART refuses one for detectors). Both adversarial sets are
evaluated with robustseg.eval.evaluate on the same ground truth, so the speed is compared at the AP drop each
reaches. Target on CPU: ART time / robustseg time >= 1.1.

ART is an optional benchmark extra, never a runtime dependency:  pip install -e '.[bench]'

    python benchmarks/vs_art.py                      # shipped tiny model, 16 synthetic images, PGD-10 at 8/255
    python benchmarks/vs_art.py --device cuda --model full.pt --size 800
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robustseg.attacks import PGD  # noqa: E402
from robustseg.attacks.objectives import LOSS_NAMES, make_objective  # noqa: E402
from robustseg.eval.coco_eval import evaluate, predict, to_coco_results  # noqa: E402
from robustseg.models.checkpoint import load_model  # noqa: E402


def art_estimator(model, shape, device: str, freeze: bool):
    try:
        from art.estimators.object_detection import PyTorchObjectDetector
    except ImportError:
        sys.exit("ART is not installed: pip install -e '.[bench]'  (adversarial-robustness-toolbox==1.20.1)")
    for p in model.parameters():  # ART leaves parameters as they are: by default their gradients are computed too
        p.requires_grad_(not freeze)
    return PyTorchObjectDetector(model, input_shape=shape, clip_values=(0.0, 1.0), channels_first=True,
                                 attack_losses=LOSS_NAMES, device_type="gpu" if device.startswith("cuda") else "cpu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped tiny model)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="synthetic image side (the tiny model works at 128)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-frozen-variant", action="store_true",
                    help="skip the extra 'ART with parameters frozen by hand' row")
    args = ap.parse_args(argv)
    from art.attacks.evasion import ProjectedGradientDescent

    eps = float(eval(args.eps, {}))
    step = 2.5 * eps / args.steps  # robustseg's default step (Madry's rule), given to ART as eps_step
    C.header("vs ART: PyTorchObjectDetector + ProjectedGradientDescent vs robustseg PGD", args)
    lm = load_model(C.model_path(args.model), device=args.device)
    model = lm.model.to(args.device)
    ds, images, targets = C.load_set(lm, args.images, size=args.size, device=args.device)
    groups = [([images[i] for i in idx], [targets[i] for i in idx], [ds.image_ids[i] for i in idx])
              for idx in C.chunks(len(images), args.batch_size)]

    # ART's input: one NCHW float32 numpy array in [0,1] (clip_values=(0,1) -> no rescaling), targets as numpy
    # dicts; masks (N,H,W) uint8 are passed through to torchvision, which needs them for loss_mask.
    x_np = np.stack([x.cpu().numpy() for x in images]).astype(np.float32)
    y_np = [{"boxes": t["boxes"].cpu().numpy().astype(np.float32), "labels": t["labels"].cpu().numpy(),
             "masks": t["masks"].cpu().numpy().astype(np.uint8)} for t in targets]

    def make_art(freeze: bool):
        est = art_estimator(model, tuple(x_np.shape[1:]), args.device, freeze)
        return ProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=step, max_iter=args.steps,
                                        targeted=False, num_random_init=0, batch_size=args.batch_size,
                                        verbose=False)

    attack = PGD(steps=args.steps, random_start=False)
    objective = make_objective("gt")  # all five losses, like attack_losses=LOSS_NAMES
    out: dict[str, list] = {}

    def run_art(freeze: bool, key: str):
        pgd = make_art(freeze)
        adv = pgd.generate(x_np, y_np)
        out[key] = [torch.from_numpy(a).to(args.device) for a in adv]
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()  # ART leaves the model in train mode

    def run_rs():
        adv = []
        for imgs, tgts, _ in groups:
            adv += attack(model, imgs, tgts, [eps], objective)[0]
        out["robustseg"] = adv

    fns = {"ART": lambda: run_art(False, "ART"), "robustseg": run_rs}
    if not args.no_frozen_variant:
        fns["ART_frozen"] = lambda: run_art(True, "ART_frozen")
    print(f"-- {len(images)} images of {args.size}px, batch {args.batch_size}, PGD-{args.steps}, Linf eps "
          f"{args.eps}, step {step:.5f} ({step * 255:.2f}/255), losses {','.join(LOSS_NAMES)}")
    t = C.keep_quiet(C.interleaved(fns, args.repeats, args.warmup, args.device))

    def ap_of(advs) -> dict:
        results = []
        for (_, _, ids), idx in zip(groups, C.chunks(len(images), args.batch_size)):
            outs = predict(model, [advs[i] for i in idx])
            results += [r for o, iid in zip(outs, ids) for r in to_coco_results(o, iid, lm.category_ids)]
        m = evaluate(ds.coco, results, ds.image_ids, per_class=False)
        return {"bbox": m["bbox"]["AP"], "segm": m["segm"]["AP"]}

    aps = {"clean": ap_of(images), **{k: ap_of(out[k]) for k in fns}}
    linf = {k: max(float((a - x).abs().max()) for a, x in zip(out[k], images)) for k in fns}
    diff = float(torch.stack([(a - b).abs().mean() for a, b in zip(out["ART"], out["robustseg"])]).mean())
    same = float(np.mean([float(((a - b).abs() < 1e-5).float().mean()) for a, b in zip(out["ART"], out["robustseg"])]))
    print("\nresults (last repeat's adversarial images)")
    print(f"{'':12} {'time':>34} {'bbox AP':>8} {'segm AP':>8} {'max |delta|':>12}")
    print(f"{'clean':12} {'':>34} {aps['clean']['bbox']:>8.3f} {aps['clean']['segm']:>8.3f}")
    for k in fns:
        print(f"{k:12} {C.spread(t[k]):>34} {aps[k]['bbox']:>8.3f} {aps[k]['segm']:>8.3f} {linf[k] * 255:>9.2f}/255")
    print(f"ART vs robustseg adversarial images: mean |difference| {diff * 255:.3f}/255, "
          f"{same:.1%} of pixels equal (expected: ART loops steps outside batches, robustseg batches outside steps, so Mask R-CNN's random "
          f"proposal sampling in the losses draws differently)")
    ratio = C.med(t["ART"]) / C.med(t["robustseg"])
    print(f"\nspeed-up ART / robustseg = {ratio:.3f} (target >= 1.1 on CPU: {'met' if ratio >= 1.1 else 'MISSED'})")
    if "ART_frozen" in t:
        print(f"          ART with parameters frozen by hand / robustseg = "
              f"{C.med(t['ART_frozen']) / C.med(t['robustseg']):.3f} (not ART's default; isolates the cost of "
              f"the parameter gradients ART computes)")
    print(f"AP drop bbox: ART {aps['clean']['bbox'] - aps['ART']['bbox']:.3f}, robustseg "
          f"{aps['clean']['bbox'] - aps['robustseg']['bbox']:.3f}; segm: ART "
          f"{aps['clean']['segm'] - aps['ART']['segm']:.3f}, robustseg {aps['clean']['segm'] - aps['robustseg']['segm']:.3f}")
    C.footer()
    return 0


if __name__ == "__main__":
    sys.exit(main())
