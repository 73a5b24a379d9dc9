#!/usr/bin/env bash
# Reproduces weights/attnmel-default.safetensors end to end on a CPU, from the ISIC 2017 data
# (about 35 minutes on 2 otherwise idle cores: the two recipes train side by side, one core each).
#
#   scripts/reproduce_default_model.sh [ISIC2017_DIR] [WORK_DIR]
#
# Trains AttnMel-CNN from scratch (no ImageNet weights are reachable here) at width 0.25 and
# 128 px, with and without the lesion regularisation of Eq. 5, keeps for each the weights
# averaged over its last 4 epochs, measures the colour baseline under the same protocol, and
# copies the recipe with the higher validation AUC to weights/.
set -euo pipefail
DATA=${1:-../shared/data/isic2017-256}
WORK=${2:-runs/default-model}
RECIPE=(--no-pretrained --width 0.25 --image-size 128 --epochs 14 --lr-step 10 --average-last 4
        --seed 0 --workers 1)

attnmel prepare "$DATA" --out "$WORK/prepared"
for roi in none lesion; do
  OMP_NUM_THREADS=1 attnmel train --data "$WORK/prepared" --out "$WORK/$roi" --roi "$roi" \
    "${RECIPE[@]}" > /dev/null 2> "$WORK/train-$roi.log" &
done
wait
python scripts/colour_baseline.py --data "$WORK/prepared" --json "$WORK/colour_baseline.json"
for roi in none lesion; do
  attnmel evaluate --data "$WORK/prepared" --split val -c "$WORK/$roi/averaged.safetensors" \
    --out "$WORK/report-$roi" --force --format json > "$WORK/report-$roi.json"
done
attnmel evaluate --data "$WORK/prepared" --split val -c "$WORK/none/averaged.safetensors" \
  --compare "$WORK/lesion/averaged.safetensors" --format json > "$WORK/compare.json"
best=$(python - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
auc = {roi: json.load(open(f"{work}/report-{roi}.json"))["checkpoints"][0]["roc_auc"]["value"]
       for roi in ("none", "lesion")}
print(max(auc, key=auc.get))
PY
)
cp "$WORK/$best/averaged.safetensors" weights/attnmel-default.safetensors
echo "shipped recipe --roi $best: weights/attnmel-default.safetensors"
