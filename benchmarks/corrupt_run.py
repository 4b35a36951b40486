"""The whole `robustseg corrupt` run against its floor: predict-only on the same images.

The floor is what any corruption benchmark must pay: one prediction pass per point (clean + corruptions x
severities) on the same images at the same batch size; measured twice, on the clean images (76 clean passes) and
on the run's own inputs (the same corrupted images, made beforehand): a detector takes longer on corrupted images
(noise and blur leave more proposals and detections for the mask head), which is the model's cost, not the run's. The run also corrupts the images, evaluates every point
with pycocotools, writes its files and the report. Stage breakdown from wrappers around corrupt_batch, predict
and evaluate inside the same run. Target (issue 17): run / floor <= 1.3.

    python benchmarks/corrupt_run.py                            # shipped model, 32 images, benchmark x 1-5
    python benchmarks/corrupt_run.py --images 8 --corruptions fog,snow --severities 3
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from robustseg.corruptions import benchmark as cb  # noqa: E402
from robustseg.eval.coco_eval import predict  # noqa: E402
from robustseg.models.checkpoint import load_model  # noqa: E402


def _timing(module, name: str, totals: dict):
    real = getattr(module, name)

    def wrapped(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            totals[name] += time.perf_counter() - t
    setattr(module, name, wrapped)
    return real


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped tiny model)")
    ap.add_argument("--images", type=int, default=32, help="images of the default synthetic split (default 32)")
    ap.add_argument("--corruptions", default="benchmark")
    ap.add_argument("--severities", default="1-5")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    C.header("corrupt_run: robustseg corrupt vs predict-only on the same images", args)
    import robustseg.kinds.corruption as kind
    from robustseg.run import scoring
    lm = load_model(C.model_path(args.model), device=args.device)
    n_points = 1 + len(cb.parse_corruptions(args.corruptions)) * len(cb.parse_severities(args.severities))

    totals: dict = defaultdict(float)
    reals = [(kind, "corrupt_batch", _timing(kind, "corrupt_batch", totals)),
             (kind, "predict", _timing(kind, "predict", totals)),
             (scoring, "evaluate", _timing(scoring, "evaluate", totals))]
    out = Path(tempfile.mkdtemp(prefix="corrupt-run-")) / "run"
    t0 = time.perf_counter()
    res = kind.run_corruptions(lm, corruptions=args.corruptions, severities=args.severities, out=out,
                               limit=args.images, batch_size=args.batch_size, device=args.device, progress=False)
    whole = time.perf_counter() - t0
    for module, name, real in reals:
        setattr(module, name, real)

    from robustseg.data.coco import CocoDataset
    from robustseg.fileio import read_json
    info = read_json(res.out / "run.json", "run.json")
    ds = CocoDataset(info["dataset"]["annotations"], info["dataset"]["images"], category_ids=lm.category_ids,
                     limit=args.images)
    images = [ds.load_image(i).to(args.device) for i in range(len(ds))]
    groups = [images[i:i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def floor():
        for _ in range(n_points):
            for g in groups:
                predict(lm.model, g)
    floor_s = C.timed(floor, args.device)
    # the same corrupted images, made beforehand: what predicting them costs (more detections than clean ones)
    from robustseg.corruptions import corrupt_batch
    from robustseg.utils import derived_seed
    ids = ds.image_ids
    corrupted = [corrupt_batch(images, n, s, [derived_seed(0, "corruption", n, s, i) for i in ids])
                 for n in cb.parse_corruptions(args.corruptions) for s in cb.parse_severities(args.severities)]

    def floor_same_inputs():
        for g in groups:
            predict(lm.model, g)
        for imgs in corrupted:
            for i in range(0, len(imgs), args.batch_size):
                predict(lm.model, imgs[i:i + args.batch_size])
    same_s = C.timed(floor_same_inputs, args.device)
    corrupted.clear()
    clean_pass = totals["predict"] / max(n_points - 1, 1)  # the engine's clean pass is not in kind.predict
    print(f"images {len(images)}, points {n_points} (clean + {n_points - 1}), batch {args.batch_size}")
    print(f"whole run {whole:.1f} s; floor (predict-only, {n_points} passes) {floor_s:.1f} s; "
          f"ratio {whole / floor_s:.2f}")
    print(f"floor on the run's own inputs (clean + the same corrupted images, made beforehand, predicted only) "
          f"{same_s:.1f} s; ratio {whole / same_s:.2f}")
    print(f"stages: corrupt {totals['corrupt_batch']:.1f} s, predict (corrupted points) {totals['predict']:.1f} s "
          f"(+ clean pass ~{clean_pass:.1f} s), COCO evaluation {totals['evaluate']:.1f} s, other "
          f"{whole - totals['corrupt_batch'] - totals['predict'] - clean_pass - totals['evaluate']:.1f} s "
          f"(files, examples, report)")
    print(res.summary())
    shutil.rmtree(out.parent, ignore_errors=True)
    C.footer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
