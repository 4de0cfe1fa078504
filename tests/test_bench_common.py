"""Every bench names the machine first: CPU, bf16 units, the dtype `auto` picks, the matmul peak."""

import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_machine_line_names_cpu_dtype_and_a_measured_peak(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("_common", None)
    import _common

    from dep_lightning.models.backbone import cpu_model, resolve_dtype

    line = _common.machine_line()
    first, peak = line.splitlines()
    assert first.startswith(f"CPU: {cpu_model()} (avx512_bf16 ") and "amx_bf16 " in first
    assert f"backbone_dtype auto = {str(resolve_dtype('auto')).removeprefix('torch.')}" in first
    rate = float(re.search(r": ([0-9.]+) GFLOP/s$", peak).group(1))
    assert rate > 0


def test_every_bench_prints_the_machine_line():
    benches = sorted(BENCH.glob("bench_*.py"))
    assert benches
    missing = [p.name for p in benches if "print(machine_line(" not in p.read_text()]
    assert not missing, missing
