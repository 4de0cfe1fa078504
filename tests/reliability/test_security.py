"""Security properties, enforced by scanning the package source and by behaviour.

* no ``trust_remote_code``; every Hugging Face / sentence-transformers load is local-only,
  and the offline switches default to on; loading the models works with sockets blocked;
* no pickle: no pickle-family imports, no ``allow_pickle=True``, every ``torch.load`` has
  ``weights_only=True``; the CLI loads checkpoints with ``weights_only=True`` and refuses
  ``--weights_only false``; a checkpoint holding a pickled object is refused unexecuted;
* ids from the data (user, item, sample ids) never become file paths; category names,
  which do, must be plain file names;
* no network client imports; secret environment variables are never read, and secrets
  that reach a config are redacted in the saved ``config.yaml``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "dep_lightning"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def parsed():
    for path in SOURCES:
        yield path.relative_to(REPO), ast.parse(path.read_text(), filename=str(path))


def calls(tree):
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def name_of(func: ast.AST) -> str:
    """Dotted name of a called function (``torch.load``, ``AutoModel.from_pretrained``)."""
    if isinstance(func, ast.Attribute):
        return f"{name_of(func.value)}.{func.attr}"
    if isinstance(func, ast.Name):
        return func.id
    return "?"


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_the_scan_sees_the_package():
    assert len(SOURCES) > 30 and any(p.name == "backbone.py" for p in SOURCES)


def test_no_trust_remote_code():
    found = [f"{path}:{node.lineno}" for path, tree in parsed() for node in ast.walk(tree)
             if (isinstance(node, ast.keyword) and node.arg == "trust_remote_code")
             or (isinstance(node, ast.Constant) and node.value == "trust_remote_code")]
    assert found == []


# The one audited download: backbone._download, reached only with backbone_options.allow_download
# (and HF_HUB_OFFLINE=0); tests/models/test_backbone_options.py checks it is not called otherwise.
ALLOWED_DOWNLOADS = {("dep_lightning/models/backbone.py", "snapshot_download")}


def test_model_loads_are_local_only():
    bad = []
    for path, tree in parsed():
        for call in calls(tree):
            name = name_of(call.func)
            if name.endswith(".from_pretrained") and not is_true(keyword(call, "local_files_only")):
                bad.append(f"{path}:{call.lineno} {name}")
            if name.endswith("SentenceTransformer") and call.args and not is_true(keyword(call, "local_files_only")):
                bad.append(f"{path}:{call.lineno} {name}")
            if name.split(".")[-1] in ("snapshot_download", "hf_hub_download", "load_dataset"):
                if (str(path), name) not in ALLOWED_DOWNLOADS:
                    bad.append(f"{path}:{call.lineno} {name} downloads")
    assert bad == []


PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
NETWORK_MODULES = {"socket", "requests", "httpx", "urllib.request", "http.client", "aiohttp", "ftplib"}


def imported_modules(tree) -> set[str]:
    """Modules a file imports. ``from pickle import UnpicklingError`` (exception classes only,
    to catch what ``torch.load(weights_only=True)`` raises) imports nothing that loads."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pickle" and all(alias.name.endswith("Error") for alias in node.names):
                continue
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_pickle_and_no_network_clients():
    bad = []
    for path, tree in parsed():
        for module in imported_modules(tree):
            if module.split(".")[0] in PICKLE_MODULES or module in NETWORK_MODULES or module == "torch.load":
                bad.append(f"{path}: imports {module}")
    assert bad == []


def test_arrays_and_checkpoints_are_loaded_without_pickle():
    bad, loads = [], 0
    for path, tree in parsed():
        for call in calls(tree):
            name = name_of(call.func)
            allow = keyword(call, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                bad.append(f"{path}:{call.lineno} allow_pickle={ast.unparse(allow)}")
            if name in ("torch.load", "pl_load", "_load") or name.endswith("read_pickle"):
                loads += 1
                if not is_true(keyword(call, "weights_only")):
                    bad.append(f"{path}:{call.lineno} {name} without weights_only=True")
    assert bad == []


# Data fields that identify users, items and samples: never a file or folder name.
ID_NAMES = {"user_id", "item_id", "asin", "parent_asin", "reviewerID", "sample_id", "user", "item"}
PATH_FUNCTIONS = {"open", "Path", "os.path.join", "os.open", "os.makedirs", "np.save", "np.savez", "shutil.copy",
                  "shutil.move", "gzip.open", "tempfile.mkdtemp"}
PATH_METHODS = {"joinpath", "with_name", "with_stem", "with_suffix"}


def mentions_an_id(node: ast.AST) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in ID_NAMES:
            return sub.id
        if isinstance(sub, ast.Attribute) and sub.attr in ID_NAMES:
            return sub.attr
        if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) and sub.slice.value in ID_NAMES:
            return sub.slice.value
    return None


def path_parts(node: ast.AST) -> list[ast.AST]:
    """The pieces a node builds a file path from: ``base / piece`` or a path function's arguments."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        base = ast.unparse(node.left).lower()
        if any(word in base for word in ("path", "dir", "folder", "root", "out", "run", "cache")):
            return [node.right]
    if isinstance(node, ast.Call) and (name_of(node.func) in PATH_FUNCTIONS or (
            isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS)):
        return [*node.args, *(kw.value for kw in node.keywords)]
    return []


def test_ids_from_the_data_never_become_paths():
    bad = []
    for path, tree in parsed():
        for node in ast.walk(tree):
            for part in path_parts(node):
                found = mentions_an_id(part)
                if found:
                    bad.append(f"{path}:{node.lineno} {found} in {ast.unparse(node)[:90]}")
    assert bad == []


SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "API_KEY", "TOKEN", "SECRET", "PASSWORD")


def test_secret_environment_variables_are_never_read():
    from dep_lightning.safety import is_secret_name

    bad = []
    for path, tree in parsed():
        if path.name == "safety.py":  # reads them only to redact them
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isupper() \
                    and is_secret_name(node.value):
                bad.append(f"{path}:{node.lineno} {node.value}")
    assert bad == []


def test_category_names_must_be_plain_file_names(tmp_path):
    from dep_lightning.data.sources import DPLSource, FiveCoreSource

    for name in ("../escape", "a/b", "..", "", "x\0y", "a\\b"):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            DPLSource(str(tmp_path), categories=[name])
    with pytest.raises(ValueError, match="cannot be used as a file name"):
        FiveCoreSource(str(tmp_path / "reviews_.._5.json"))
    assert FiveCoreSource(str(tmp_path / "reviews_Musical_Instruments_5.json.gz")).category == "Musical_Instruments"


# ------------------------------------------------------------------ behaviour
def run_python(code: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**(env if env is not None else os.environ), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_offline_switches_default_on_and_respect_the_user():
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                              "HF_DATASETS_OFFLINE")}
    show = "import os, dep_lightning; print([os.environ.get(k) for k in " \
           "('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE')])"
    assert run_python(show, clean).stdout.strip() == "['1', '1', '1']"
    assert run_python(show, {**clean, "HF_HUB_OFFLINE": "0"}).stdout.strip() == "['0', '1', '1']"


@pytest.mark.slow
def test_models_load_with_the_network_blocked():
    """Backbone tokenizer, tiny backbone, the MiniLM embedder: all load with every socket refused."""
    result = run_python("""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse
        from dep_lightning.models.backbone import load_tokenizer, tiny_backbone
        from dep_lightning.embeddings.embedder import SentenceEmbedder
        load_tokenizer()
        tiny_backbone()
        print(SentenceEmbedder().dimension, SentenceEmbedder(model="tiny").dimension)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["384", "32"]


def test_secrets_in_a_config_are_redacted_in_the_saved_config(tmp_path, monkeypatch):
    """A secret that reaches the config (here via ${oc.env:...}) never lands in config.yaml."""
    from lightning import Trainer

    from dep_lightning.safety import REDACTED, redact
    from dep_lightning.training import DEPLightningCLI, RedactingSaveConfigCallback

    secret = "wandb-secret-9f8e7d6c5b4a"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    config = tmp_path / "config.yaml"
    config.write_text(
        "\n"
        "model: {class_path: dep_lightning.models.dep_module.DEPModule, init_args: {backbone: tiny}}\n"
        "data: {init_args: {embedder: {model: tiny}}}\n"
        "trainer:\n"
        "  logger: {class_path: lightning.pytorch.loggers.CSVLogger,"
        ' init_args: {save_dir: runs, name: "${oc.env:WANDB_API_KEY}"}}\n'
    )
    cli = DEPLightningCLI(["--config", str(config)], run=False)
    assert cli.save_config_callback is RedactingSaveConfigCallback
    assert secret in cli.parser.dump(cli.config, skip_none=False)  # the secret did reach the config
    callback = RedactingSaveConfigCallback(cli.parser, cli.config, overwrite=True)
    callback.setup(Trainer(default_root_dir=tmp_path / "run", logger=False), cli.model, "fit")
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert secret not in saved and f"name: {REDACTED}" in saved and "backbone: tiny" in saved
    # Keys that name credentials are redacted whatever their value; look-alikes are not.
    assert redact({"api_key": "abc", "wandb": {"password": "x"}, "tokenizer": "smollm2", "max_new_tokens": 8},
                  set()) == {"api_key": REDACTED, "wandb": {"password": REDACTED}, "tokenizer": "smollm2",
                             "max_new_tokens": 8}


def test_cli_refuses_weights_only_false(tmp_path):
    from dep_lightning.training import DEPLightningCLI

    config = tmp_path / "config.yaml"
    config.write_text("model: {class_path: dep_lightning.models.dep_module.DEPModule, init_args: {backbone: tiny}}\n"
                      "data: {init_args: {embedder: {model: tiny}}}\n")
    with pytest.raises(ValueError, match="weights_only false is refused"):
        DEPLightningCLI(["test", "--config", str(config), "--ckpt_path", str(tmp_path / "x.ckpt"),
                         "--weights_only", "false"])


@pytest.mark.slow
def test_a_checkpoint_with_a_pickled_object_is_refused_unexecuted(tmp_path):
    """``dep-lightning test --ckpt_path evil.ckpt``: the load fails and the payload never runs."""
    import torch

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.0",
                "payload": _Payload(str(marker))}, evil)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
model: {{class_path: dep_lightning.models.dep_module.DEPModule, init_args: {{backbone: tiny}}}}
data:
  init_args:
    embedder: {{model: tiny}}
    cache_dir: {tmp_path / 'embeddings'}
    source: {{init_args: {{num_users: 40, num_items: 36}}}}
    limit_train: 2
    limit_val: 2
    limit_test: 2
trainer: {{accelerator: cpu, logger: false, enable_progress_bar: false}}
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "dep_lightning", "test", "--config", str(config),
                             "--ckpt_path", str(evil)], env=env, capture_output=True, text=True, timeout=400,
                            cwd=tmp_path)
    assert result.returncode != 0
    assert "Weights only load failed" in result.stderr or "weights_only" in result.stderr, result.stderr[-3000:]
    assert not marker.exists()


class _Payload:
    """Unpickling this touches a file: proof of code execution if it ever happens."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_the_scanners_catch_violations():
    """Each scan flags a planted violation (so an empty result means something)."""
    tree = ast.parse(textwrap.dedent("""
        import pickle
        import requests
        m = AutoModel.from_pretrained(name, trust_remote_code=True)
        x = np.load(f, allow_pickle=True)
        c = torch.load(path)
        out = run_dir / f"{row['user_id']}.json"
        p = Path(cache, review.item_id)
    """))
    assert {m for m in imported_modules(tree)} >= {"pickle", "requests"}
    assert any(isinstance(n, ast.keyword) and n.arg == "trust_remote_code" for n in ast.walk(tree))
    flagged = [c for c in calls(tree) if name_of(c.func).endswith(".from_pretrained")
               and not is_true(keyword(c, "local_files_only"))]
    assert len(flagged) == 1
    assert any(is_true(keyword(c, "allow_pickle")) for c in calls(tree))
    assert any(name_of(c.func) == "torch.load" and not is_true(keyword(c, "weights_only")) for c in calls(tree))
    ids = [mentions_an_id(part) for node in ast.walk(tree) for part in path_parts(node)]
    assert [i for i in ids if i] == ["user_id", "item_id"]


def test_the_import_check_still_sees_pickle_loaders():
    flagged = imported_modules(ast.parse("import pickle\nfrom pickle import loads\nfrom pickle import UnpicklingError"))
    assert {"pickle", "pickle.loads"} <= flagged and "pickle.UnpicklingError" not in flagged
