"""What the training-speed benches share: the real Musical Instruments prompts, timing, tables.

The prompts are built by the DataModule exactly as in training (k history reviews with
text and his/diff slots, guidance, 2,048-token budget). The slot vectors come from the
tiny sentence model: the speed of a step does not depend on their values, and the real
embedder would first spend ~10 minutes embedding the corpus on 2 cores (the adapters'
cost, a few small matmuls, is the same to within microseconds).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "reviews_Musical_Instruments_5.json.gz"


def musical_instruments(k: int = 4, batch_size: int = 1, eval_batch_size: int = 8, data: Path = DATA,
                        embedder: str = "tiny", limit_test: int | None = 64, prompt=None):
    """A set-up DEPDataModule over the 5-core Musical Instruments reviews (configs/prepare/musical_instruments.yaml);
    ``prompt``: a ``PromptConfig`` (default: the DataModule's, with review text)."""
    from dep_lightning.data.datamodule import DEPDataModule
    from dep_lightning.data.prompt import PromptConfig
    from dep_lightning.data.sources import FiveCoreSource
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    if not Path(data).is_file():
        raise SystemExit(f"review data not found: {data} (pass --data)")
    dm = DEPDataModule(source=FiveCoreSource(str(data)), embedder=SentenceEmbedder(model=embedder), k=k,
                       tokenizer="smollm2-135m-instruct", prompt=prompt or PromptConfig(), batch_size=batch_size,
                       eval_batch_size=eval_batch_size, limit_val=8, limit_test=limit_test)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def length_stats(examples) -> str:
    lengths = np.array([len(e.input_ids) for e in examples])
    return (f"{len(lengths)} samples, tokens per sample mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
            f"p90 {np.percentile(lengths, 90):.0f}, max {lengths.max()}")


def load_smollm2(embedding_dim: int, seed: int = 0, dtype: str = "float32"):
    from dep_lightning.models.dep_module import DEPModule

    return DEPModule(backbone="smollm2-135m-instruct", backbone_dtype=dtype, embedding_dim=embedding_dim, seed=seed)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_note() -> str:
    import os

    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {os.cpu_count()} CPUs"


def matmul_peak(n: int, dtype, repeats: int) -> dict[str, float]:
    """FLOP/s of an n x n x n product through ``torch.mm`` and through ``F.linear`` (oneDNN), best of repeats."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    rates = {}
    for name, fn in (("torch.mm", lambda: torch.mm(a, b)), ("F.linear", lambda: torch.nn.functional.linear(a, b))):
        fn()  # warm-up: packing buffers, kernel selection
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * n**3 / best
    return rates


def machine_line(peak: bool = True) -> str:
    """What every bench prints first: the CPU model, its bf16 units, the dtype ``backbone_dtype:
    auto`` picks here, torch's threads, the load, and (``peak``) the measured matmul peak of
    that dtype, the reference the bench's rates can be read against."""
    import torch

    from dep_lightning.models.backbone import cpu_has_native_bf16, cpu_model, resolve_dtype

    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = next((set(line.split(":", 1)[1].split()) for line in handle if line.startswith("flags")), set())
    except OSError:
        pass
    marks = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512_bf16", "amx_bf16"))
    dtype = resolve_dtype("auto")
    name = str(dtype).removeprefix("torch.")
    line = (f"CPU: {cpu_model()} ({marks}; native bf16 {'yes' if cpu_has_native_bf16() else 'no'}); "
            f"backbone_dtype auto = {name}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"{load_note()}")
    if peak:
        # bf16 without bf16 units is emulated (~28x slower): a smaller product keeps this short.
        n = 1024 if dtype == torch.float32 or cpu_has_native_bf16() else 256
        rate = max(matmul_peak(n, dtype, repeats=5).values())
        line += f"\nmatmul peak ({name}, {n}^3, best of torch.mm / F.linear): {rate / 1e9:.1f} GFLOP/s"
    return line
