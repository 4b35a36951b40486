#!/usr/bin/env bash
# The adversarial fine-tuning recipe of docs/adversarial-training.md, on 2 CPUs:
#   1. 1000 synthetic training images (seed 7: neither the shipped model's training set nor the evaluation split)
#   2. fine-tune the shipped model with fast adversarial training (FGSM + random start, Wong et al. 2020) at
#      eps 4/255, half of every batch adversarial
#   3. control: the same fine-tuning schedule without adversarial examples (is it the examples, or just more
#      training at a lower learning rate?)
#   4. robustseg compare: the quick suite (clean, random, FGSM and PGD-10 at 1-8/255) and the input-gradient
#      norms of all three on the first 32 images of the built-in evaluation split
# Usage: benchmarks/adv_recipe.sh [OUT_DIR] ; env ITERS (1200)
set -euo pipefail
D=${1:-runs/adv-recipe}
ITERS=${ITERS:-1200}
mkdir -p "$D"
robustseg data synth --out "$D/data" --n 1000 --seed 7
COMMON=(--init shipped --data "$D/data/annotations.json" --images "$D/data/images" --iters "$ITERS" --lr 5e-4
        --warmup 50 --ckpt-every 200 --seed 0 --force)
time robustseg train "${COMMON[@]}" --adv fgsm-rs --eps 4/255 --adv-ratio 0.5 --out "$D/adv.pt"
time robustseg train "${COMMON[@]}" --out "$D/clean.pt"
time robustseg compare shipped "$D/clean.pt" "$D/adv.pt" --out "$D/compare" --force
