#!/usr/bin/env bash
# Likelihood scoring of the Musical Instruments study (docs/results.md, docs/personalization.md):
# DEP and the trained no-user control of the study's longer training (512 training samples,
# 2 epochs = 256 optimizer steps, without review text, seed 0), retrained with today's
# defaults, then every reference of the test split (869 users) scored under true / swap / none.
#   bash scripts/study_scoring.sh [RUNS_ROOT]      (resumable: finished runs are skipped)
#   ARMS=dep EXPORT=0 bash scripts/study_scoring.sh & ARMS=no_user EXPORT=0 bash scripts/study_scoring.sh
#       (the two arms side by side, one torch thread each; then run it once more to export)
# Needs the prepared data: dep-lightning prepare --config configs/prepare/musical_instruments.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/study_scored}
BIN=${BIN:-.venv/bin}
ARMS=${ARMS:-dep no_user}
declare -A EXTRA=([dep]="configs/experiment/table3_sae.yaml" [no_user]="configs/baselines/no_user.yaml")
for arm in $ARMS; do
  [ -n "${EXTRA[$arm]+set}" ] || { echo "study scoring: unknown arm $arm (one of ${!EXTRA[*]})" >&2; exit 2; }
  if [ -f "$ROOT/$arm/scores/test.jsonl" ]; then echo "study scoring: $arm done, skipped"; continue; fi
  rm -rf "${ROOT:?}/$arm"
  echo "study scoring: $arm ($(date -u +%H:%M:%S))"
  "$BIN/dep-lightning" fit --config configs/quickstart.yaml --config configs/study/musical_instruments.yaml \
    --config configs/study/long_training.yaml --config "${EXTRA[$arm]}" \
    --data.init_args.prompt.with_text=false --seed_everything=0 \
    --score_after_fit '[true, swap, none]' --run_dir "$ROOT/$arm"
done
[ "${EXPORT:-1}" = 0 ] || "$BIN/dep-lightning" export --runs "$ROOT" --out docs/results/scored/runs
