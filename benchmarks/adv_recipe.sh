#!/usr/bin/env bash
# The adversarial fine-tuning recipe of docs/adversarial-training.md, at the scale it was measured on 2 shared CPUs:
#   1. 1000 synthetic training images (seed 7: neither the shipped model's training set nor the evaluation split)
#   2. BatchNorm policy: fast adversarial training (FGSM + random start, Wong et al. 2020) at 4/255, half of every
#      batch adversarial, once with --bn batch and once with --bn frozen (same schedule, seed, data)
#   3. with the chosen policy ($BN): PGD-AT (3 steps, 4/255, same mix) and the control (same schedule, no
#      adversarial examples: is it the examples, or just more training at a lower learning rate?)
#   4. robustseg compare on the first $LIMIT images of the built-in evaluation split with benchmarks/adv_eval.toml:
#      the robust ensemble (four APGD members) at 4/255 and 8/255, FGSM/PGD-5/PGD-10 and Square at 8/255, the
#      sanity checks, the input-gradient norms
#   5. robustseg transfer: PGD-10 8/255 crafted on the shipped model, evaluated on every fine-tuned checkpoint
# Usage: benchmarks/adv_recipe.sh [OUT_DIR] ; env ITERS (400), LIMIT (16), BN (frozen)
# OMP_NUM_THREADS=1 because the machine was shared: two threads fighting another job for two cores ran 5x slower.
set -euo pipefail
D=${1:-runs/adv}
ITERS=${ITERS:-400}
LIMIT=${LIMIT:-16}
BN=${BN:-frozen}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$D"
[ -f "$D/data/annotations.json" ] || robustseg data synth --out "$D/data" --n 1000 --seed 7
COMMON=(--init shipped --data "$D/data/annotations.json" --images "$D/data/images" --iters "$ITERS" --lr 5e-4
        --warmup 50 --ckpt-every 200 --seed 0 --force)
wall() { local s; s=$(date +%s); "${@:2}"; echo "WALL $1 $(( $(date +%s) - s )) s"; }
for bn in batch frozen; do
  wall "fgsm-$bn" robustseg train "${COMMON[@]}" --adv fgsm-rs --eps 4/255 --adv-ratio 0.5 --bn $bn --out "$D/fgsm-$bn.pt"
done
wall pgd robustseg train "${COMMON[@]}" --adv pgd --eps 4/255 --steps 3 --adv-ratio 0.5 --bn "$BN" --out "$D/pgd.pt"
wall clean robustseg train "${COMMON[@]}" --bn "$BN" --out "$D/clean.pt"
EVAL=(--suite benchmarks/adv_eval.toml --limit "$LIMIT" --seed 0)
# (measured in two steps: the two BatchNorm runs first, then the rest with --resume, which keeps complete runs)
wall compare robustseg compare shipped "$D/clean.pt" "$D/fgsm-batch.pt" "$D/fgsm-frozen.pt" "$D/pgd.pt" "${EVAL[@]}" \
    --out "$D/compare" --force
wall transfer robustseg transfer --source shipped --target "$D/clean.pt" "$D/fgsm-batch.pt" "$D/fgsm-frozen.pt" \
    "$D/pgd.pt" --suite benchmarks/adv_transfer.toml --limit "$LIMIT" --seed 0 --out "$D/transfer" --force
