#!/usr/bin/env bash
# The planted-signal positive control (docs/personalization.md): DEP and the trained no-user
# control on the signal (user_signal 1.0) and null (0.0) arms, plus DEP in the paper's scale
# form, the control with DEP's capacity (inputs by slot kind only) and DEP with a learned
# offset per slot kind and rank (the control's positional capacity) on the signal arm; after
# each, the forced-choice opener recall (scripts/opener_choice.py); then exports the runs and
# writes the summary.
#   bash scripts/positive_control.sh [RUNS_ROOT]     (resumable: finished runs are skipped)
#   ARMS="dep_null dep_paper_form_signal" bash scripts/positive_control.sh   (only these arms, in this order;
#   the export and summary still cover every finished run under RUNS_ROOT)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-runs/positive_control}
BIN=${BIN:-.venv/bin}
ARMS=${ARMS:-dep_signal dep_paper_form_signal dep_null no_user_signal no_user_null no_user_per_kind_signal dep_slot_offset_signal}
run() {  # name, extra configs...
  local name=$1; shift
  if [ -f "$ROOT/$name/scores/test.jsonl" ]; then
    echo "positive control: $name done, skipped"
  else
    rm -rf "$ROOT/$name"
    local args=(--config configs/positive_control/dep.yaml)
    for extra in "$@"; do args+=(--config "configs/positive_control/$extra.yaml"); done
    echo "positive control: $name ($(date -u +%H:%M:%S))"
    "$BIN/dep-lightning" fit "${args[@]}" --run_dir "$ROOT/$name"
  fi
  # Forced-choice group recall by the opening line's likelihood (true and swap prompts).
  if [ ! -f "$ROOT/$name/analysis/opener_choice.json" ]; then
    "$BIN/python" scripts/opener_choice.py "$ROOT/$name" --limit 96
  fi
}
declare -A EXTRA=([dep_signal]="" [dep_paper_form_signal]="paper_form" [dep_null]="null"
                  [no_user_signal]="no_user" [no_user_null]="no_user null"
                  [no_user_per_kind_signal]="no_user_per_kind" [dep_slot_offset_signal]="slot_offset")
for arm in $ARMS; do
  [ -n "${EXTRA[$arm]+set}" ] || { echo "positive control: unknown arm $arm (one of ${!EXTRA[*]})" >&2; exit 2; }
  # shellcheck disable=SC2086  # the extra configs are words
  run "$arm" ${EXTRA[$arm]}
done
"$BIN/dep-lightning" export --runs "$ROOT" --out docs/results/positive_control/runs
"$BIN/python" scripts/positive_control_summary.py docs/results/positive_control/runs \
  --out docs/results/positive_control/summary.json
