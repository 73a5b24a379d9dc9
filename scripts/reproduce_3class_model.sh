#!/usr/bin/env bash
# Reproduces weights/attnmel-isic2017-3class.safetensors end to end on a CPU, from ISIC 2017:
#
#   scripts/reproduce_3class_model.sh [ISIC2017_DIR] [WORK_DIR]
#
# The default model's recipe (scripts/reproduce_default_model.sh: AttnMel-CNN on the
# ImageNet-pretrained EfficientNet-Lite0, 192 px, 4 epochs, AdamW + one-cycle, focal loss,
# melanoma drawn 4 times per epoch) with `--classes isic2017`: melanoma, seborrheic keratosis,
# nevus (ISIC 2017 Part 3).
# 1. 3-fold stratified cross-validation over train + val (2,150 images; the default model's
#    folds: same seed, same assignment), each fold model its last epoch; also the binary
#    AttnMel-CNN on the same folds, so that the two rank melanoma on the same images (paired).
# 2. The final model on all 2,150 images (no validation split: the last epoch), copied to weights/
#    and exported to ONNX beside it (weights/attnmel-isic2017-3class.onnx; needs the onnx extra).
# 3. scripts/cv_report_3class.py: per-class AUC/AP, the ISIC 2017 Part 3 mean, balanced accuracy
#    (mean ± sd over folds, pooled with intervals), the colour baseline on the same folds, the
#    binary model compared on melanoma (DeLong), and the ISIC 2016 test photos out of fold.
# JOBS runs side by side, THREADS torch threads and WORKERS loading workers each. Wall time on
# 2 cores: see weights/README-3class.md.
#
# INIT=CKPT: two-stage, as the default model (docs/external-data.md): every 3-class run starts
# from CKPT (the binary HAM10000 first stage of scripts/reproduce_ham_model.sh, its classifier
# left out: `train --init` across classes), and so do the binary fold runs.
# ROI=lesion: the attention regularised by the lesion masks (`--roi lesion`, as the default model).
# STEPS (default all): prepare train ship report; a later call with the rest carries on.
# RUNS (default all): which training runs: final 3class binary.
set -euo pipefail
DATA=${1:-../shared/data/isic2017-256}
WORK=${2:-runs/3class-model}
ISIC2016=${ISIC2016:-../shared/data/isic2016-test-fullres}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
INIT=${INIT:-}
ROI=${ROI:-none}
STEPS=${STEPS:-prepare train ship report}
RUNS=${RUNS:-final 3class binary}
FOLDS=3
EPOCHS=4
export RECIPE_STR="--backbone efficientnet_lite0 --pretrained --arch attnmel --image-size 192
  --epochs $EPOCHS --optimizer adamw --schedule onecycle --lr 3e-4 --weight-decay 0.01
  --batch-size 32 --seed 0 --roi $ROI${INIT:+ --init $INIT}"

job() {  # name extra-flags…: one training run into $WORK/runs/name (skipped when complete)
  local out="$WORK/runs/$1"; shift
  if [ -f "$out/last.safetensors" ] && [ "$(wc -l < "$out/metrics.csv")" -eq $((EPOCHS + 1)) ]; then
    return 0
  fi
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$THREADS attnmel train --data "$WORK/prepared" --out "$out" --force \
    $RECIPE_STR --workers "$WORKERS" "$@" > /dev/null 2> "$out.log"
  echo "$(basename "$out"): $(( $(date +%s) - t0 )) s" >> "$WORK/wall.txt"
}
export -f job
export WORK EPOCHS THREADS WORKERS
has() { case " $STEPS $RUNS " in *" $1 "*) return 0 ;; esac; return 1; }

mkdir -p "$WORK/runs"
if has prepare; then attnmel prepare "$DATA" --out "$WORK/prepared"; fi
if has train; then
start=$(date +%s)
{
  if has final; then echo "final --classes isic2017 --train-splits train,val"; fi
  for f in $(seq 0 $((FOLDS - 1))); do
    if has 3class; then echo "3class-f$f --classes isic2017 --folds $FOLDS --fold $f"; fi
    if has binary; then echo "binary-f$f --folds $FOLDS --fold $f"; fi
  done
} | xargs -P "$JOBS" -L 1 bash -c 'job "$@"' _
echo "training: $(( $(date +%s) - start )) s" | tee -a "$WORK/wall.txt" >&2
fi
if has ship; then
  cp "$WORK/runs/final/last.safetensors" weights/attnmel-isic2017-3class.safetensors
  # Its ONNX export, which predict and explain score where onnxruntime is installed
  # (tests/test_onnx.py checks that the two agree).
  attnmel export weights/attnmel-isic2017-3class.safetensors \
    --out weights/attnmel-isic2017-3class.onnx --force
  echo "shipped: weights/attnmel-isic2017-3class.safetensors and .onnx"
fi
if has report; then
  start=$(date +%s)
  python scripts/cv_report_3class.py --data "$WORK/prepared" --runs "$WORK/runs" \
    --folds $FOLDS --isic2016 "$ISIC2016" --json "$WORK/cv_report.json" \
    --markdown "$WORK/cv_tables.md"
  echo "report: $(( $(date +%s) - start )) s" | tee -a "$WORK/wall.txt" >&2
fi
