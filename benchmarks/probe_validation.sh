#!/usr/bin/env bash
# Ground-truth check of the shape-bias probe (docs/probes.md). Three tiny models, each trained with one cue:
#   shape     uniform fill: shape is the only cue (no texture at all)
#   shape-rt  textures present but random (--cue-conflict 0.667: texture independent of the class): shape is
#             the only reliable cue -- the mirror image of
#   texture   random shapes, class = texture (--shape-mode random): texture is the only reliable cue
# then probe all three. The probe must rank them: shape bias high for the shape models, low for texture.
# Usage: benchmarks/probe_validation.sh [OUT_DIR] ; env ITERS (800), SIZE (128), N (400), EVAL_N (100)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
D=${1:-runs/probe-validation}
ITERS=${ITERS:-800}; SIZE=${SIZE:-128}; N=${N:-400}; EVAL_N=${EVAL_N:-100}
ARCH=(--arch-opt min_size=$SIZE --arch-opt max_size=$SIZE)
mkdir -p "$D"
robustseg data synth --out "$D/data-shape" --n "$N" --seed 101 --size "$SIZE" --fill uniform
robustseg data synth --out "$D/data-shape-rt" --n "$N" --seed 104 --size "$SIZE" --cue-conflict 0.667
robustseg data synth --out "$D/data-texture" --n "$N" --seed 102 --size "$SIZE" --shape-mode random
robustseg data synth --out "$D/data-eval" --n "$EVAL_N" --seed 103 --size "$SIZE"
for kind in shape shape-rt texture; do
  time robustseg train --data "$D/data-$kind/annotations.json" --images "$D/data-$kind/images" \
    --out "$D/$kind.pt" --iters "$ITERS" --warmup 50 --ckpt-every "$ITERS" "${ARCH[@]}" --force
done
for kind in shape shape-rt texture; do
  robustseg probe --model "$D/$kind.pt" --data "$D/data-eval/annotations.json" --images "$D/data-eval/images" \
    --out "$D/probe-$kind" --force
done
