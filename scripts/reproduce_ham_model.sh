#!/usr/bin/env bash
# HAM10000 beside ISIC 2017 (issue 21), measured on the default model card's 3 folds:
#
#   scripts/reproduce_ham_model.sh [WORK_DIR]        (default runs/ham; STEPS selects steps)
#
# 1. prepare: ISIC 2017 with the paper's crop (0.8), HAM10000 whole (--crop-fraction 1: its
#    lesions are centred and its 200×150 photos would keep only 120 px of the paper's crop).
# 2. stage1: AttnMel-CNN (EfficientNet-Lite0, ImageNet) on all of HAM10000 (train + val, none of
#    it is an ISIC 2017 image), 2 epochs at 128 px (its photos hold ~150 px); stage1-lesion: the
#    same with --roi lesion (each only when a row or FINAL needs it).
# 3. the rows, each a 3-fold cross-validation over ISIC 2017 train + val (seed 0: the card's
#    folds; every fold model its last epoch), all with today's recipe (4 epochs at 192 px,
#    AdamW one-cycle 3e-4):
#      today      today's recipe (ISIC 2017 only), re-run so that every row is scored alike
#      twostage   --init stage1, then today's recipe on the fold (HAM10000 first, then ISIC)
#      mixed      --data ISIC --data HAM --source-weights ham10000=0.1 (each epoch: every ISIC
#                 image, a fresh tenth of HAM10000's oversampled pool, ~37 % of the draws)
#      twostage-lesion, mixed-lesion: the same with --roi lesion (stage1-lesion for twostage)
# 4. report: scripts/cv_report_ham.py (AUC, AP, Table 3 Jaccard, DeLong vs today and vs the
#    best, TTA of the best, the colour baseline, the ISIC 2016 photos out of fold); its cache
#    keeps the scores of rows already reported, so a later session scores only the rows it added.
# 5. final (FINAL=row, default twostage-lesion, the shipped default): that row's recipe once
#    more on all 2,150 ISIC 2017 train + val images (no held-out fold: the last epoch), written
#    to $WORK/final-<row>; copy it to weights/ and export it by hand (see weights/README.md).
# Every training run checkpoints each epoch; re-running the script resumes an interrupted run
# and skips finished ones, so it can be carried across sessions. JOBS runs side by side, each
# with THREADS torch threads and WORKERS loading workers (on a GPU: JOBS=6 THREADS=2 WORKERS=2).
# Wall times (weights/README.md): on the 2-core Xeon stage 1 17–33 min, a fold run 16–23 min
# (two side by side), the final 27 min, the report 10–25 min; on one H200 stage 1 2 min, every
# fold run 1–2 min (nine side by side), the final 1 min. The 3-class model:
# scripts/reproduce_3class_model.sh.
set -euo pipefail
WORK=${1:-runs/ham}
ISIC2017=${ISIC2017:-../shared/data/isic2017-256}
HAM=${HAM:-../shared/data/ham10000-200x150}
ISIC2016=${ISIC2016:-../shared/data/isic2016-test-fullres}
JOBS=${JOBS:-2}
WORKERS=${WORKERS:-1}  # data-loading workers per run
THREADS=${THREADS:-$((2 / JOBS > 0 ? 2 / JOBS : 1))}  # torch threads per fold run
STEPS=${STEPS:-prepare stage1 folds report final}
FINAL=${FINAL:-twostage-lesion}
ROWS=${ROWS:-twostage today mixed twostage-lesion mixed-lesion}
FOLDS=3
EPOCHS=4
STAGE1_EPOCHS=2
RECIPE="--backbone efficientnet_lite0 --arch attnmel --optimizer adamw --schedule onecycle \
--lr 3e-4 --weight-decay 0.01 --batch-size 32 --seed 0"
export WORK FOLDS EPOCHS STAGE1_EPOCHS RECIPE WORKERS

run() {  # OUT EPOCHS ARGS…: train into OUT; resume it when interrupted, skip it when finished
  local out=$1 epochs=$2
  shift 2
  if [ -f "$out/last.safetensors" ] && [ "$(wc -l < "$out/metrics.csv")" -gt "$epochs" ]; then
    return 0
  fi
  local again=--force
  [ -f "$out/last.state.safetensors" ] && again=--resume
  local start
  start=$(date +%s)
  # shellcheck disable=SC2086
  attnmel train --out "$out" $again --epochs "$epochs" $RECIPE "$@" --workers "$WORKERS" \
    > /dev/null 2>> "$out.log"
  echo "$(basename "$out"): $(( $(date +%s) - start )) s" >> "$WORK/wall-times.txt"
}

row_flags() {  # ROW: the training options that make a row (beside today's recipe)
  case $1 in
    today) ;;
    twostage) echo "--init $WORK/stage1/last.safetensors" ;;
    mixed) echo "--data $WORK/prepared/ham10000 --source-weights ham10000=0.1" ;;
    twostage-lesion) echo "--init $WORK/stage1-lesion/last.safetensors --roi lesion" ;;
    mixed-lesion) echo "--data $WORK/prepared/ham10000 --source-weights ham10000=0.1 --roi lesion" ;;
    *) echo "unknown row $1" >&2; return 1 ;;
  esac
}

fold_run() {  # ROW FOLD
  local flags
  flags=$(row_flags "$1")
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$THREADS run "$WORK/cv/$1-f$2" "$EPOCHS" \
    --data "$WORK/prepared/isic2017" --pretrained --image-size 192 --folds "$FOLDS" \
    --fold "$2" $flags
}
export -f run row_flags fold_run

mkdir -p "$WORK/cv"
for step in $STEPS; do
  case $step in
    prepare)
      attnmel prepare "$ISIC2017" --out "$WORK/prepared/isic2017" > /dev/null
      attnmel prepare "$HAM" --out "$WORK/prepared/ham10000" --crop-fraction 1 > /dev/null ;;
    stage1)
      case " $ROWS $FINAL " in *" twostage "*)
        run "$WORK/stage1" "$STAGE1_EPOCHS" --data "$WORK/prepared/ham10000" --pretrained \
          --image-size 128 --train-splits train,val ;;
      esac
      case " $ROWS $FINAL " in *" twostage-lesion "*)
        run "$WORK/stage1-lesion" "$STAGE1_EPOCHS" --data "$WORK/prepared/ham10000" \
          --pretrained --image-size 128 --train-splits train,val --roi lesion ;;
      esac ;;
    folds)
      for row in $ROWS; do
        for fold in $(seq 0 $((FOLDS - 1))); do echo "$row $fold"; done
      done | xargs -P "$JOBS" -L 1 bash -c 'THREADS='"$THREADS"' fold_run "$0" "$1"' ;;
    report)
      python scripts/cv_report_ham.py --data "$WORK/prepared/isic2017" --runs "$WORK/cv" \
        --folds "$FOLDS" --rows "today,$(echo "$ROWS" | tr ' ' ',' | sed 's/today,\?//')" \
        --isic2016 "$ISIC2016" --cache "$WORK/report-cache.json" \
        --json "$WORK/cv_report.json" --markdown "$WORK/cv_tables.md" > /dev/null ;;
    final)
      flags=$(row_flags "$FINAL")
      # shellcheck disable=SC2086
      run "$WORK/final-$FINAL" "$EPOCHS" \
        --data "$WORK/prepared/isic2017" --pretrained --image-size 192 --train-splits train,val \
        $flags ;;
  esac
done
