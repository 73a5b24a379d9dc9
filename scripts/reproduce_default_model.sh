#!/usr/bin/env bash
# Reproduces weights/attnmel-isic2017-cc0.safetensors (the ISIC-2017-only model, the default until
# the HAM10000 two-stage model: scripts/reproduce_ham_model.sh) end to end on a CPU:
#
#   scripts/reproduce_default_model.sh [ISIC2017_DIR] [WORK_DIR]
#
# 1. 3-fold stratified cross-validation over ISIC 2017 train + val (2,150 images) of the paper's
#    Table 2 rows on the ImageNet-pretrained EfficientNet-Lite0 backbone (192 px, 4 epochs): the
#    pooled baseline (gap), AttnMel-CNN (attnmel), and AttnMel-CNN-Lesion (lesion), on the
#    paper's crop (0.8 of the shorter side); and AttnMel-CNN on the whole image (whole: prepared
#    with --crop-fraction 1). Each fold model is its last epoch (nothing is selected on the
#    held-out fold). JOBS runs side by side, one thread each.
# 2. scripts/cv_report.py: per-fold and pooled out-of-fold AUC/AP (with and without 8-view TTA),
#    the colour baseline on the same folds, and the ISIC 2016 test photos scored out of fold.
# 3. The variant with the highest mean cross-validated AUC (without TTA) is trained once more on
#    all 2,150 images (no validation split: the last epoch), copied to weights/ and exported to
#    ONNX beside it (weights/attnmel-isic2017-cc0.onnx; needs the onnx extra).
# Wall time on 2 cores: see weights/README.md (12-16 minutes a fold run, two side by side).
set -euo pipefail
DATA=${1:-../shared/data/isic2017-256}
WORK=${2:-runs/default-model}
ISIC2016=${ISIC2016:-../shared/data/isic2016-test-fullres}
JOBS=${JOBS:-2}
FOLDS=3
EPOCHS=4
VARIANTS=(lesion whole attnmel gap)  # longest first, for the side-by-side jobs
RECIPE=(--backbone efficientnet_lite0 --pretrained --image-size 192 --epochs $EPOCHS
        --optimizer adamw --schedule onecycle --lr 3e-4 --weight-decay 0.01 --batch-size 32
        --seed 0)

variant_flags() {
  case $1 in
    gap) echo "--arch vgg16-gap" ;;
    attnmel | whole) echo "--arch attnmel" ;;  # whole: the same, on the whole-image dir
    lesion) echo "--arch attnmel --roi lesion" ;;
  esac
}

finished() {  # a run dir whose metrics.csv has every epoch
  [ -f "$1/last.safetensors" ] && [ "$(wc -l < "$1/metrics.csv")" -eq $((EPOCHS + 1)) ]
}

data_of() {  # variant: the prepared dir it trains on
  if [ "$1" = whole ]; then echo "$WORK/prepared-whole"; else echo "$WORK/prepared"; fi
}

fold_job() {  # variant fold
  local out="$WORK/cv/$1-f$2"
  finished "$out" && return 0
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=1 attnmel train --data "$(data_of "$1")" --out "$out" --force "${RECIPE[@]}" \
    --workers 1 --folds $FOLDS --fold "$2" $(variant_flags "$1") > /dev/null 2> "$out.log"
}

mkdir -p "$WORK/cv"
attnmel prepare "$DATA" --out "$WORK/prepared"
attnmel prepare "$DATA" --out "$WORK/prepared-whole" --crop-fraction 1
start=$(date +%s)
export -f fold_job variant_flags finished data_of
export WORK FOLDS EPOCHS
export RECIPE_STR="${RECIPE[*]}"
for fold in $(seq 0 $((FOLDS - 1))); do
  for variant in "${VARIANTS[@]}"; do echo "$variant $fold"; done
done | xargs -P "$JOBS" -L 1 bash -c 'RECIPE=($RECIPE_STR); fold_job "$0" "$1"'
echo "cross-validation: $(( $(date +%s) - start )) s" >&2

python scripts/cv_report.py --data "$WORK/prepared" --runs "$WORK/cv" --folds $FOLDS \
  --variants gap,attnmel,lesion,whole --variant-data "whole=$WORK/prepared-whole" --tta \
  --isic2016 "$ISIC2016" --json "$WORK/cv_report.json" \
  --markdown "$WORK/cv_tables.md" > /dev/null
best=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["chosen"])' \
  "$WORK/cv_report.json")
echo "chosen by mean cross-validated AUC: $best" >&2

start=$(date +%s)
# shellcheck disable=SC2046
attnmel train --data "$(data_of "$best")" --out "$WORK/final-$best" --force "${RECIPE[@]}" \
  --train-splits train,val $(variant_flags "$best") > /dev/null 2> "$WORK/final-$best.log"
echo "final model: $(( $(date +%s) - start )) s" >&2
cp "$WORK/final-$best/last.safetensors" weights/attnmel-isic2017-cc0.safetensors
# Its ONNX export, which predict and explain score where onnxruntime is installed
# (tests/test_onnx.py checks that the two agree).
attnmel export weights/attnmel-isic2017-cc0.safetensors --out weights/attnmel-isic2017-cc0.onnx --force \
  > /dev/null
echo "shipped: weights/attnmel-isic2017-cc0.safetensors and .onnx ($best)"
