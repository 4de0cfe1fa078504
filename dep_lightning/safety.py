"""Run-time safety defaults: no network for models, no pickle in checkpoints, no secrets on disk.

* Offline: :func:`offline_defaults` sets ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and
  ``HF_DATASETS_OFFLINE`` to ``1`` unless the user set them (``dep_lightning/__init__.py``
  calls it before anything imports Hugging Face libraries); every model load also passes
  ``local_files_only=True``.
* Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values
  only, never pickled objects (:func:`require_weights_only`, used by the CLI); a
  ``--ckpt_path`` that is no checkpoint at all is refused in one line before it is
  loaded (:func:`check_checkpoint_path`).
* Secrets: the ``config.yaml`` that LightningCLI saves into each run directory has every
  secret-looking value replaced by ``<redacted>`` (:func:`redact`): values under keys such as
  ``api_key`` / ``token`` / ``password``, and any value equal to a secret environment
  variable (``WANDB_API_KEY``, ``HF_TOKEN``, ``*_SECRET``, ...) that reached the config, e.g.
  through ``${oc.env:WANDB_API_KEY}``.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
from typing import Any, Mapping

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
REDACTED = "<redacted>"
# Key names (config keys or environment variables) whose values are credentials: whole
# underscore-separated words, so "tokenizer" or "max_new_tokens" are not secrets.
_SECRET_WORDS = re.compile(r"(^|_)(api_?key|token|secret|secret_key|password|passwd|credentials?|private_key"
                           r"|access_key|auth)($|_)")
_MIN_SECRET_CHARS = 6  # shorter env values ("1", "true") would redact innocent config values


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_WORDS.search(name.lower().replace("-", "_")))


def offline_defaults(environ: dict[str, str] | None = None) -> None:
    """Hugging Face libraries never reach the network unless the user asked for it."""
    environ = os.environ if environ is None else environ
    for name in OFFLINE_VARIABLES:
        environ.setdefault(name, "1")


def secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of environment variables whose names say they are credentials."""
    environ = os.environ if environ is None else environ
    return {value for name, value in environ.items()
            if is_secret_name(name) and len(value.strip()) >= _MIN_SECRET_CHARS}


def redact(value: Any, secrets: set[str], key: str = "") -> Any:
    """A copy of ``value`` (namespaces, dicts, lists, strings) with secrets replaced by ``<redacted>``."""
    if isinstance(value, argparse.Namespace):  # jsonargparse's Namespace is one
        out = copy.copy(value)
        for name, item in vars(value).items():
            setattr(out, name, redact(item, secrets, name))
        return out
    if isinstance(value, Mapping):
        return {k: redact(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets, key) for v in value)
    if isinstance(value, str):
        if value and is_secret_name(key):
            return REDACTED
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
    return value


def require_weights_only(subcommand_config: dict[str, Any]) -> None:
    """Checkpoints load with ``weights_only=True``; an explicit ``false`` is refused.

    Our checkpoints hold only tensors and plain values, so nothing needs unpickling, and
    unpickling a file from elsewhere can run arbitrary code.
    """
    if "weights_only" not in subcommand_config:
        return
    if subcommand_config["weights_only"] is False:
        raise ValueError("--weights_only false is refused: dep-lightning checkpoints hold only tensors and plain "
                         "values, and unpickling a checkpoint can run arbitrary code")
    subcommand_config["weights_only"] = True


#: ``--ckpt_path`` values Lightning resolves itself (not file names).
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")


def check_checkpoint_path(ckpt_path: Any) -> None:
    """A ``--ckpt_path`` file must look like a checkpoint before Lightning loads it.

    Lightning and ``torch.save`` write a zip archive holding ``<name>/data.pkl``; DeepSpeed a
    folder holding ``<tag>/mp_rank_00_model_states.pt``. Anything else (a text file, a
    truncated download, which has lost the zip's closing directory) would fail deep inside
    ``torch.load`` with a traceback that names neither the file nor the option, so it is an
    :class:`~dep_lightning.data.errors.InputError` here. Only the layout is checked (cheap
    for a file of any size); a well-formed checkpoint of another model is Lightning's to report.
    """
    import zipfile
    from pathlib import Path

    from dep_lightning.data.errors import InputError

    if ckpt_path is None or ckpt_path in LIGHTNING_CKPT_NAMES or str(ckpt_path).split(":")[0] == "registry":
        return
    path = Path(ckpt_path)
    if path.is_dir():
        from dep_lightning.checkpoints import MODEL_STATES, is_deepspeed_folder

        # DeepSpeed's layout; its contents are checked where such folders are read.
        if not is_deepspeed_folder(path):
            raise InputError(str(path), None, "ckpt_path", str(ckpt_path), "not a checkpoint",
                             f"a folder without <tag>/{MODEL_STATES}, so not a DeepSpeed checkpoint")
        return
    if not path.is_file():
        raise InputError(str(path), None, "ckpt_path", str(ckpt_path), "no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise InputError(str(path), None, "ckpt_path", str(ckpt_path), "not a checkpoint",
                         "not a zip archive as Lightning / torch.save write (another file, or truncated?)")
    with zipfile.ZipFile(path) as archive:
        if not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in archive.namelist()):
            raise InputError(str(path), None, "ckpt_path", str(ckpt_path), "not a checkpoint",
                             "a zip archive without data.pkl, so not written by torch.save")


def unreadable_checkpoint(ckpt_path: Any, error: Exception):
    """The :class:`~dep_lightning.data.errors.InputError` for a ``--ckpt_path`` that passed
    :func:`check_checkpoint_path` but whose contents ``torch.load`` could not read (a damaged
    zip member, bytes that are no pickle, objects ``weights_only`` refuses)."""
    from dep_lightning.data.errors import InputError

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # torch's messages carry terminal bold
    _, refused, reason = text.partition("WeightsUnpickler error:")  # torch's own reason, after its advice
    lines = [line.strip() for line in (reason if refused else text).splitlines() if line.strip()]
    reason = ("weights_only load refused: " if refused else "") + (lines or [""])[0]
    reason = reason if len(reason) <= 120 else reason[:117] + "..."
    return InputError(str(ckpt_path), None, "ckpt_path", str(ckpt_path), "unreadable checkpoint",
                      f"{type(error).__name__}: {reason}; the file is damaged or not a checkpoint")
