import copy
import re
import time
from pathlib import Path

import pytest
import torch

import dep_lightning
from dep_lightning.models import backbone as bb
from dep_lightning.models.backbone import (
    SMOLLM2,
    end_of_turn_id,
    load_backbone,
    load_tokenizer,
    resolve_dtype,
    tiny_backbone,
)
from dep_lightning.models.components import splice_soft_prompts
from tests.tolerances import BF16_EPS

# /proc/cpuinfo flags of the CPU kinds this project runs on (one processor block; the
# real files repeat it per logical CPU, which the tests below do too).
AMD_EPYC_AVX2 = (  # AMD EPYC 7B13 (Zen 3): AVX2, no AVX-512, no bf16
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
    "model name\t: AMD EPYC 7B13\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid "
    "extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave "
    "avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext "
    "invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed "
    "adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip vaes "
    "vpclmulqdq rdpid fsrm\n"
    "bugs\t\t: sysret_ss_attrs null_seg spectre_v1 spectre_v2 spec_store_bypass srso\n\n"
)
INTEL_XEON_AMX = (  # Intel Xeon (Sapphire Rapids): AVX-512 with avx512_bf16 and amx_bf16
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
    "model name\t: Intel(R) Xeon(R) Processor\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid "
    "tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes "
    "xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault fsgsbase tsc_adjust bmi1 hle avx2 "
    "smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip avx512_vbmi2 "
    "gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm "
    "serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities\n"
    "bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs\n\n"
)
INTEL_XEON_AVX512_ONLY = (  # Intel Xeon (Cascade Lake): AVX-512 and VNNI, but no bf16
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
    "model name\t: Intel(R) Xeon(R) CPU @ 2.80GHz\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor "
    "lahf_lm abm 3dnowprefetch fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm mpx avx512f "
    "avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves arat "
    "avx512_vnni md_clear arch_capabilities\n\n"
)


def _smollm2_folder() -> Path:
    return bb._gguf_cache_folder(bb.smollm2_gguf_path(), SMOLLM2, None)


@pytest.fixture(scope="session")
def smollm2_conversion():
    """Convert the packaged GGUF once per session into the default cache (a no-op when cached).

    Deliberately the default cache, not a temporary one: dequantizing costs 10-50 s.
    Returns the conversion's duration, or None if the cache already existed.
    """
    try:
        folder = _smollm2_folder()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    if (folder / bb._MARKER).is_file():
        return None
    start = time.perf_counter()
    load_tokenizer(SMOLLM2)
    return time.perf_counter() - start


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_conversion):
    return load_tokenizer(SMOLLM2)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEP_LIGHTNING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny(smollm2_tokenizer, tmp_cache):
    return tiny_backbone(seed=0, vocab_from=smollm2_tokenizer)


def test_tokenizer_chatml_and_pad(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token_id is not None
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_prepare_tokenizer_fills_template_and_pad_without_new_tokens(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template, tok.pad_token = None, None
    size = len(tok)
    bb._prepare_tokenizer(tok)
    assert tok.chat_template == bb.CHATML_TEMPLATE
    assert tok.pad_token_id == end_of_turn_id(tok) and len(tok) == size


def test_end_of_turn_falls_back_to_eos():
    class Tok:  # a vocabulary without ChatML markers; unknown tokens map to unk = 0
        eos_token_id = 7

        def convert_tokens_to_ids(self, token):
            return {"</s>": 7}.get(token, 0)

        def convert_ids_to_tokens(self, token_id):
            return {7: "</s>", 0: "<unk>"}[token_id]

    assert end_of_turn_id(Tok()) == 7


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path, monkeypatch):
    from dep_lightning.models import backbone

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert not backbone.cpu_has_native_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert backbone.cpu_has_native_bf16(str(info))
    assert not backbone.cpu_has_native_bf16(str(tmp_path / "missing"))
    monkeypatch.setattr(backbone.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(backbone, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype("auto") is torch.bfloat16
    monkeypatch.setattr(backbone, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto") is torch.float32


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [(AMD_EPYC_AVX2, torch.float32), (INTEL_XEON_AMX, torch.bfloat16), (INTEL_XEON_AVX512_ONLY, torch.float32)],
    ids=["amd-epyc-avx2", "intel-xeon-amx-bf16", "intel-xeon-avx512-no-bf16"],
)
def test_backbone_dtype_auto_on_described_cpus(cpuinfo, expected, tiny, tmp_path, monkeypatch):
    """``backbone_dtype: auto`` on a CPU-only machine, from that machine's /proc/cpuinfo."""
    info = tmp_path / "cpuinfo"
    info.write_text(cpuinfo + cpuinfo.replace("processor\t: 0", "processor\t: 1"))  # two logical CPUs
    monkeypatch.setattr(bb.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bb.cpu_has_native_bf16, "__defaults__", (str(info),))  # what it reads by default
    assert bb.cpu_has_native_bf16() is (expected is torch.bfloat16)
    assert resolve_dtype("auto") is expected
    model, tok = tiny
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert load_backbone(str(folder), dtype="auto")[0].dtype == expected


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("float16") is torch.float16
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    # auto on this machine: what its own flags say (the described CPUs above cover both answers)
    if not torch.cuda.is_available():
        assert resolve_dtype("auto") is (torch.bfloat16 if bb.cpu_has_native_bf16() else torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")


def test_tiny_backbone_frozen_and_deterministic(tiny, smollm2_tokenizer):
    model, tok = tiny
    assert tok is smollm2_tokenizer and model.config.vocab_size == len(tok)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    rng = torch.get_rng_state()
    again, _ = tiny_backbone(seed=0, vocab_from=tok)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is left alone
    other, _ = tiny_backbone(seed=1, vocab_from=tok)
    for (name, a), b, c in zip(model.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_tiny_forward_inputs_embeds_and_training_step(tiny):
    model, tok = tiny
    ids = tok(["A short review.", "Another, longer review text here."], return_tensors="pt", padding=True)
    embeds = model.get_input_embeddings()(ids.input_ids)
    with torch.no_grad():
        by_ids = model(**ids).logits
        by_embeds = model(inputs_embeds=embeds, attention_mask=ids.attention_mask).logits
    # The model looks the ids up with the same embedding and runs the same float32 ops on the
    # same shapes: bit-identical.
    assert torch.equal(by_ids, by_embeds)

    # One DEP-like step: a trainable soft vector spliced into the frozen model's input.
    soft = torch.zeros(1, model.config.hidden_size, requires_grad=True)
    start = time.perf_counter()
    spliced = splice_soft_prompts(embeds, torch.tensor([[0, 1]]), soft)
    labels = ids.input_ids.masked_fill(ids.attention_mask == 0, -100)
    loss = model(inputs_embeds=spliced, attention_mask=ids.attention_mask, labels=labels).loss
    loss.backward()
    elapsed = time.perf_counter() - start
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert elapsed < 5.0  # ~0.1 s on 2 cores; generous for a loaded CI machine


def test_tiny_generate_with_inputs_embeds_returns_new_tokens_only(tiny):
    model, tok = tiny
    tok = copy.deepcopy(tok)
    tok.padding_side = "left"  # decoder-only generation continues from the right edge
    ids = tok(["Write a review:", "Write a short review of this guitar:"], return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        full = model.generate(**ids, **kwargs)
        embeds = model.get_input_embeddings()(ids.input_ids)
        new = model.generate(inputs_embeds=embeds, attention_mask=ids.attention_mask, **kwargs)
    assert new.shape == (2, 6)
    assert torch.equal(new, full[:, ids.input_ids.shape[1] :])


def test_load_backbone_from_local_folder(tiny, tmp_path):
    model, tok = tiny
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    loaded, loaded_tok = load_backbone(str(folder), dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded_tok.pad_token_id is not None and loaded.generation_config.pad_token_id is not None
    fp32, _ = load_backbone(folder, dtype="float32")
    assert torch.equal(fp32.model.embed_tokens.weight, model.model.embed_tokens.weight)


@pytest.mark.skipif(
    not bb.cpu_has_native_bf16(),
    reason="no native bf16 on this CPU (its flags lack avx512_bf16 / amx_bf16): backbone_dtype auto picks "
    "float32 here, and emulated bf16 matmuls are ~28x slower (models/backbone.py resolve_dtype)",
)
def test_bf16_backbone_agrees_with_float32_within_bf16_rounding(tiny):
    """Where ``auto`` picks bf16 on a CPU: the frozen backbone computes in bf16 kernels and
    its logits stay within the error that bf16 rounding explains."""
    model, tok = tiny
    assert resolve_dtype("auto") is torch.bfloat16 or torch.cuda.is_available()
    ids = tok(["A short review of a tuner that holds pitch.", "Another, longer review about strings."],
              return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = model(**ids).logits
        got = copy.deepcopy(model).to(torch.bfloat16)(**ids).logits
    assert got.dtype == torch.bfloat16
    real = ids.attention_mask.bool()
    error = (got.float() - reference)[real].abs().max()
    scale = reference[real].abs().max()
    # Along the 2-layer path (embedding, norms, q/k/v/o, gate/up/down, residual adds, tied
    # head) about 16 results are rounded to bf16, each by <= eps/2 relative: to first order
    # <= 8 eps of the logits' scale (measured 3.2 eps with AMX on a Xeon).
    assert float(error) <= 8 * BF16_EPS * float(scale), (float(error), float(scale))


def test_load_backbone_missing_is_a_clear_error(tmp_cache):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_backbone(str(tmp_cache / "no-such-model"))


def test_gguf_cache_converts_once_and_keys_on_content(tiny, tmp_path, tmp_cache, monkeypatch):
    """The cache logic, with the slow dequantization replaced by saving the tiny model."""
    model, tok = tiny
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    calls = []

    def fake_convert(source, folder):
        calls.append(folder)
        folder.mkdir(parents=True)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / bb._MARKER).write_text("{}")

    monkeypatch.setattr(bb, "smollm2_gguf_path", lambda: gguf)
    monkeypatch.setattr(bb, "_convert_gguf", fake_convert)
    load_backbone(SMOLLM2, dtype="float32")
    load_backbone(SMOLLM2, dtype="float32")
    assert len(calls) == 1 and calls[0].parent == tmp_cache / "backbones"
    assert calls[0].name.startswith(SMOLLM2 + "-")
    gguf.write_bytes(b"GGUF" + bytes(99) + b"\x01")  # same size, new content: a new folder
    load_tokenizer(SMOLLM2)
    assert len(calls) == 2 and calls[1] != calls[0]


def test_no_trust_remote_code_in_package():
    root = Path(dep_lightning.__file__).parent
    pattern = re.compile(r"trust_remote_code\s*=")
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.slow
def test_real_smollm2(smollm2_conversion, monkeypatch):
    def no_conversion(*args):
        raise AssertionError("second load should come from the safetensors cache")

    monkeypatch.setattr(bb, "_convert_gguf", no_conversion)
    start = time.perf_counter()
    model, tok = load_backbone(SMOLLM2)
    cached_load = time.perf_counter() - start
    assert (_smollm2_folder() / "model.safetensors").is_file()
    if smollm2_conversion is not None:
        assert cached_load < smollm2_conversion
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert model.dtype == resolve_dtype("auto") and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.get_input_embeddings().weight.shape[0] == len(tok)  # vocabulary untouched

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Name a musical instrument."}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1 and 0 < out.shape[1] - ids.input_ids.shape[1] <= 4
