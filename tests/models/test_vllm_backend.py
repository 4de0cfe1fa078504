"""The vLLM generation backend gets exactly the HF path's prompt rows, padding removed.

vLLM itself needs CUDA (``scripts/gpu_check.sh`` compares its greedy outputs with HF's on a
GPU). Here the engine is replaced by one that decodes each request it receives with the
HF backbone, alone and unpadded: if the rows handed over were misaligned, kept padding or
lost a soft prompt, its outputs would differ from the HF path's padded batch.
"""

import sys
from types import SimpleNamespace

import pytest
import torch

from dep_lightning.models.backbone import BackboneOptions
from dep_lightning.models.dep_module import DEPModule, GenerationConfig
from dep_lightning.models.vllm_backend import VLLMGenerator, unpadded_prompt_embeds
from tests.helpers import set_up


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("test", tmp_path_factory.mktemp("embeddings"), limit_test=6, eval_batch_size=6)


@pytest.fixture(scope="module")
def prompt(datamodule):
    batch = next(iter(datamodule.test_dataloader()))
    assert (batch.attention_mask == 0).any(), "the test batch should be left-padded"
    return batch


class UnpaddedHFEngine:
    """vLLM's ``generate(prompts, params)`` contract, decoding each prompt alone with HF greedy."""

    def __init__(self, backbone, pad_id: int):
        self.backbone, self.pad_id, self.received = backbone, pad_id, []

    def generate(self, requests, params, use_tqdm=False):
        self.received.append([r["prompt_embeds"] for r in requests])
        outputs = []
        for request, p in zip(requests, params):
            assert p.temperature == 0.0  # greedy
            embeds = request["prompt_embeds"][None]
            ids = self.backbone.generate(inputs_embeds=embeds,
                                         attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                         max_new_tokens=p.max_tokens, do_sample=False, eos_token_id=p.stop_token_ids,
                                         pad_token_id=self.pad_id, temperature=None, top_p=None, top_k=None)[0]
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids.tolist())]))
        return outputs


def model(datamodule, backend: str) -> DEPModule:
    return DEPModule(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16,
                     generation=GenerationConfig(max_new_tokens=8, do_sample=False),
                     backbone_options={"generation_backend": backend})


def test_vllm_backend_decodes_the_hf_rows_without_padding(datamodule, prompt):
    hf = model(datamodule, "hf")
    vllm = model(datamodule, "vllm")
    vllm.load_state_dict(hf.state_dict())
    engine = UnpaddedHFEngine(vllm.backbone, vllm.tokenizer.pad_token_id)
    vllm.__dict__["_vllm"] = VLLMGenerator("unused", vllm.backbone.dtype, engine=engine,
                                           sampling=lambda **kw: SimpleNamespace(**kw))
    expected = hf.generate_outputs(prompt, key="k")
    got = vllm.generate_outputs(prompt, key="k")
    assert [g.text for g in got] == [e.text for e in expected]
    assert [g.tokens for g in got] == [e.tokens for e in expected]

    # What the engine received: the HF path's spliced rows (soft prompts in), padding removed.
    with torch.no_grad():
        embeds, _ = hf.input_embeddings(prompt.input_ids, prompt.slots)
    (received,) = engine.received
    mask = prompt.attention_mask
    assert [len(r) for r in received] == mask.sum(1).tolist()
    for row, sent, m in zip(embeds, received, mask):
        assert torch.equal(sent, row[m.bool()])
    positions = prompt.slots.positions
    assert positions.numel() > 0  # the soft prompts are among the rows handed over


def test_unpadded_rows_keep_only_attended_positions():
    embeds = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    rows = unpadded_prompt_embeds(embeds, mask)
    assert [tuple(r.shape) for r in rows] == [(2, 3), (4, 3)]
    assert torch.equal(rows[0], embeds[0, 2:]) and torch.equal(rows[1], embeds[1])
    with pytest.raises(ValueError, match="disagree"):
        unpadded_prompt_embeds(embeds, mask[:, :3])


def test_sampling_settings_and_seeds():
    generator = VLLMGenerator("unused", torch.bfloat16, sampling=lambda **kw: kw)
    greedy = generator.sampling_params(max_new_tokens=16, do_sample=False, temperature=0.8, top_p=0.95, seed=7,
                                       stop_ids=[2, 3])
    assert greedy == {"max_tokens": 16, "stop_token_ids": [2, 3], "seed": 7, "temperature": 0.0, "top_p": 1.0,
                      "skip_special_tokens": True}
    sampled = generator.sampling_params(max_new_tokens=16, do_sample=True, temperature=0.8, top_p=0.95, seed=7,
                                        stop_ids=[2])
    assert sampled["temperature"] == 0.8 and sampled["top_p"] == 0.95
    requests = generator.requests(torch.ones(2, 3, 4), torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert [r["prompt_embeds"].dtype for r in requests] == [torch.bfloat16] * 2


def test_backend_settings_are_checked_and_vllm_is_optional(monkeypatch):
    with pytest.raises(ValueError, match=r"generation_backend: 'sglang' is not one of auto, hf, native, vllm"):
        BackboneOptions(generation_backend="sglang")
    with pytest.raises(ValueError, match=r"vllm_gpu_memory: 1.5 is not in \(0, 1\]"):
        BackboneOptions(vllm_gpu_memory=1.5)
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install -e '.\[vllm\]'"):
        VLLMGenerator("unused", torch.float32).engine


def test_the_tiny_backbone_has_no_folder_for_vllm(datamodule, prompt):
    with pytest.raises(ValueError, match="needs a backbone read from a model folder"):
        model(datamodule, "vllm").generate_outputs(prompt)
