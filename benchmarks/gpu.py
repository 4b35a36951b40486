"""GPU throughput of the full torchvision maskrcnn_resnet50_fpn (random init) at COCO resolution (800x1333):
images/s for clean inference, robustseg PGD-10 and adversarial training steps, fp32 vs AMP (bf16 autocast),
batch 1 vs 8; AMP input gradients checked against fp32; and ART vs robustseg PGD-10 on the GPU.

Needs a CUDA GPU:            python benchmarks/gpu.py
Options:                     --batch-sizes 1,8 --amp bf16 --steps 10 --iters 3 --no-art --no-channels-last
Check the code paths on CPU: python benchmarks/gpu.py --smoke     (tiny images, figures meaningless)

Random weights are fine for speed, with one adjustment: box_score_thresh=0 for inference, so that every image
sends its full 100 detections through the mask head, as a trained model does on COCO (a random classifier's
scores, ~1/91, would otherwise all fall under the default 0.05 threshold and skip the mask head).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robustseg.attacks import PGD  # noqa: E402
from robustseg.attacks.base import gradients  # noqa: E402
from robustseg.attacks.objectives import LOSS_NAMES, make_objective  # noqa: E402
from robustseg.eval.coco_eval import predict  # noqa: E402
from robustseg.models.builders import build_model  # noqa: E402
from robustseg.models.modes import attack_mode  # noqa: E402
from robustseg.training.adversarial import Adversary  # noqa: E402

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def synthetic_batch(n: int, h: int, w: int, device, seed: int, num_classes: int = 91):
    """n images with 3-8 filled rectangles/ellipses each, and their targets (boxes, labels, masks)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    images, targets = [], []
    for _ in range(n):
        img = torch.rand(3, 1, 1, generator=g) * 0.6 + torch.rand(3, h, w, generator=g) * 0.1
        boxes, masks = [], []
        for _ in range(int(torch.randint(3, 9, (), generator=g))):
            bh, bw = (torch.rand(2, generator=g) * torch.tensor([h / 3, w / 3]) + 32).tolist()
            y0, x0 = float(torch.rand((), generator=g)) * (h - bh), float(torch.rand((), generator=g)) * (w - bw)
            if torch.rand((), generator=g) < 0.5:
                m = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
            else:
                cy, cx = y0 + bh / 2, x0 + bw / 2
                m = ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1
            img = torch.where(m, torch.rand(3, 1, 1, generator=g), img)
            ys, xs = torch.nonzero(m, as_tuple=True)
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
            masks.append(m.to(torch.uint8))
        images.append(img.clamp(0, 1).to(device))
        targets.append({"boxes": torch.tensor(boxes, device=device),
                        "labels": torch.randint(1, num_classes, (len(boxes),), generator=g).to(device),
                        "masks": torch.stack(masks).to(device)})
    return images, targets


def autocast(device: torch.device, amp: str | None):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP[amp])


def bench(fn, device, iters: int, warmup: int) -> tuple[float, float]:
    """(median seconds per call, peak memory GiB) over ``iters`` timed calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        times.append(C.timed(fn, device))
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return C.med(times), mem


def grad_agreement(model, images, targets, device, amp: str) -> str:
    """AMP vs fp32 input gradients of the attack objective on the same images (same proposal sampling seed)."""
    obj = make_objective("gt")
    with attack_mode(model):
        torch.manual_seed(0)
        g32, l32 = gradients(model, obj, images, targets)
        torch.manual_seed(0)
        with autocast(device, amp):
            gam, lam = gradients(model, obj, images, targets)
    cos = [float(torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), 0))
           for a, b in zip(g32, gam)]
    sign = [float((a.sign() == b.sign()).float().mean()) for a, b in zip(g32, gam)]
    return (f"loss fp32 {float(l32):.4f} vs {amp} {float(lam):.4f}; input-gradient cosine per image "
            f"{', '.join(f'{c:.3f}' for c in cos)}; sign agreement {', '.join(f'{s:.1%}' for s in sign)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1333)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--amp", default="bf16", choices=sorted(AMP))
    ap.add_argument("--steps", type=int, default=10, help="PGD steps (and ART max_iter)")
    ap.add_argument("--iters", type=int, default=3, help="timed calls per figure (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-art", action="store_true", help="skip the ART vs robustseg comparison")
    ap.add_argument("--art-batch-size", type=int, default=8)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help="run every code path on any device with tiny images and 2 steps (figures meaningless)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.height, args.width, args.steps, args.iters, args.warmup = 160, 224, 2, 1, 0
        args.batch_sizes, args.art_batch_size = "1,2", 2
        if args.device == "cuda" and not torch.cuda.is_available():
            args.device = "cpu"
    device = torch.device(args.device)
    if (device.type != "cuda" or not torch.cuda.is_available()) and not args.smoke:
        sys.exit("benchmarks/gpu.py measures GPU throughput and needs a CUDA device, but torch.cuda.is_available() "
                 f"is {torch.cuda.is_available()} (torch {torch.__version__}). Run it on a machine with an NVIDIA "
                 "GPU and a CUDA build of torch, or use --smoke to check the code paths on CPU.")
    C.header("GPU: maskrcnn_resnet50_fpn (random init) throughput" + (" [SMOKE: figures meaningless]"
                                                                        if args.smoke else ""), args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"GPU: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, cudnn "
              f"{torch.backends.cudnn.version()}, {torch.cuda.get_device_properties(device).total_memory / 2**30:.0f}"
              f" GiB; bf16 supported: {torch.cuda.is_bf16_supported()}")
    torch.manual_seed(0)
    size = {"min_size": min(args.height, args.width), "max_size": max(args.height, args.width)}
    model = build_model("maskrcnn_resnet50_fpn", 91, box_score_thresh=0.0, **size).to(device)
    if not args.no_channels_last:
        model = model.to(memory_format=torch.channels_last)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    bss = [int(b) for b in args.batch_sizes.split(",")]
    images, targets = synthetic_batch(max(bss + [args.art_batch_size]), args.height, args.width, device, seed=0)
    eps = 8 / 255
    objective = make_objective("gt")
    pgd = PGD(steps=args.steps, random_start=False)

    print(f"-- {args.height}x{args.width} images; PGD-{args.steps} Linf 8/255 (all five losses); adversarial "
          f"training step = robustseg's Adversary (PGD-3, 4/255, half the batch adversarial) + AdamW step")
    try:
        print("AMP gradient check (2 images): " + grad_agreement(model, images[:2], targets[:2], device, args.amp))
    except Exception as e:  # the figures below are still worth having
        print(f"AMP gradient check failed: {type(e).__name__}: {e}")

    rows = []
    for bs in bss:
        x, t = images[:bs], targets[:bs]
        for amp in (None, args.amp):
            prec = amp or "fp32"

            def infer():
                with torch.inference_mode(), autocast(device, amp):
                    predict(model, x)

            def attack():
                with autocast(device, amp):
                    pgd(model, x, t, [eps], objective)

            train_model = model  # the same weights; restored after the training figures
            opt = torch.optim.AdamW([p for p in train_model.parameters() if p.requires_grad], lr=1e-5)
            scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
            adversary = Adversary("pgd", 4 / 255, 3, 0.5, seed=0)
            it = [0]

            def train_step():
                train_model.train()
                with autocast(device, amp):
                    xs, _ = adversary(train_model, x, t, it[0])
                    loss = sum(train_model(xs, t).values())
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                it[0] += 1
                train_model.eval()

            for name, fn in (("clean inference", infer), (f"PGD-{args.steps}", attack),
                             ("adv. training step", train_step)):
                try:
                    s, mem = bench(fn, device, args.iters, args.warmup)
                    rows.append((name, bs, prec, bs / s, s, mem))
                    print(f"   {name:20} batch {bs} {prec:5}: {bs / s:8.2f} images/s ({s:.3f}s per batch, "
                          f"peak {mem:.1f} GiB)", flush=True)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append((name, bs, prec, float("nan"), float("nan"), float("nan")))
                    print(f"   {name:20} batch {bs} {prec:5}: out of memory", flush=True)
            opt = None  # frees the optimiser state before the next configuration (train_step is done with it)
            model.load_state_dict(initial)
    model.eval()

    print("\nsummary: images/s (AMP speed-up in brackets)")
    print(f"{'workload':22} {'batch':>5} {'fp32':>9} {args.amp:>9} {'x':>6} {'peak GiB fp32/' + args.amp:>18}")
    for name in dict.fromkeys(r[0] for r in rows):
        for bs in bss:
            f = next(r for r in rows if r[:3] == (name, bs, "fp32"))
            a = next(r for r in rows if r[:3] == (name, bs, args.amp))
            print(f"{name:22} {bs:>5} {f[3]:>9.2f} {a[3]:>9.2f} {a[3] / f[3]:>6.2f} {f[5]:>8.1f}/{a[5]:<8.1f}")

    if not args.no_art:
        try:
            art_vs_robustseg(model, images[:args.art_batch_size], targets[:args.art_batch_size], device, args, eps)
        except SystemExit as e:
            print(e)
        except Exception:
            print("ART comparison failed:")
            traceback.print_exc(file=sys.stdout)
    C.footer()
    return 0


def art_vs_robustseg(model, images, targets, device, args, eps: float) -> None:
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.object_detection import PyTorchObjectDetector
    except ImportError:
        raise SystemExit("ART not installed (pip install -e '.[bench]'): ART comparison skipped")
    step = 2.5 * eps / args.steps
    bs = len(images)
    print(f"\n-- ART vs robustseg on {device}: PGD-{args.steps} fp32, {bs} images of {args.height}x{args.width}, "
          f"batch {bs}, eps 8/255, step {step * 255:.2f}/255, all five losses, no random start")
    x_np = np.stack([x.cpu().numpy() for x in images]).astype(np.float32)
    y_np = [{"boxes": t["boxes"].cpu().numpy(), "labels": t["labels"].cpu().numpy(),
             "masks": t["masks"].cpu().numpy()} for t in targets]
    est = PyTorchObjectDetector(model, input_shape=tuple(x_np.shape[1:]), clip_values=(0.0, 1.0),
                                channels_first=True, attack_losses=LOSS_NAMES,
                                device_type="gpu" if device.type == "cuda" else "cpu")
    art = ProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=step, max_iter=args.steps, targeted=False,
                                   num_random_init=0, batch_size=bs, verbose=False)
    pgd = PGD(steps=args.steps, random_start=False)
    objective = make_objective("gt")

    def run_art():
        art.generate(x_np, y_np)
        model.eval()  # ART leaves the model in train mode

    def run_rs():
        pgd(model, images, targets, [eps], objective)

    t = C.keep_quiet(C.interleaved({"ART": run_art, "robustseg": run_rs}, max(args.iters, 1), args.warmup, device))
    ratio = C.med(t["ART"]) / C.med(t["robustseg"])
    print(f"ART {C.spread(t['ART'])}; robustseg {C.spread(t['robustseg'])}")
    print(f"speed-up ART / robustseg = {ratio:.2f} (target >= 2 on a GPU: {'met' if ratio >= 2 else 'MISSED'}); "
          f"note ART also computes parameter gradients (it leaves requires_grad as the model has it)")


if __name__ == "__main__":
    sys.exit(main())
