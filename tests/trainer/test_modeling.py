"""modeling.py: the model loader shared by the trainer and the server (tiny Llama, CPU, offline)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from codex_api.common import ModelSource, PvcPath
from codex_trainer import embedded, modeling
from codex_trainer.errors import InvalidSpecError


def _digest(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def test_tiny_llama_is_deterministic_from_its_seed(tmp_path, models_dir):
    again = tmp_path / "again"
    revision = embedded.build_tiny_llama(again)
    assert revision == "embedded/tiny-llama@seed1337-v1"
    built = _digest(models_dir / "tiny-llama")
    built.pop(embedded.MARKER)
    assert _digest(again) == built
    other = tmp_path / "other-seed"
    embedded.build_tiny_llama(other, seed=7)
    assert _digest(other)["model.safetensors"] != built["model.safetensors"]


def test_tiny_llama_size_and_tokenizer(models_dir, tiny_source):
    tokenizer = modeling.load_tokenizer(tiny_source, models_dir=models_dir)
    model = modeling.load_base_model(tiny_source, models_dir=models_dir)
    assert 80_000 < sum(p.numel() for p in model.parameters()) < 150_000
    assert len(tokenizer) == model.config.vocab_size
    # No pad token in the saved tokenizer: the loader falls back to eos.
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"
    code = "def add(a, b):\n    return a + b\n"
    assert tokenizer.decode(tokenizer(code).input_ids) == code


def test_chat_template_masks_assistant_turns(models_dir, tiny_source):
    tokenizer = modeling.load_tokenizer(tiny_source, models_dir=models_dir)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
    out = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(masked) == "ok<|im_end|>"


def test_dtype_defaults_to_fp32_on_cpu_and_honours_a_request(models_dir, tiny_source):
    assert modeling.load_base_model(tiny_source, models_dir=models_dir).dtype == torch.float32
    model = modeling.load_base_model(tiny_source, models_dir=models_dir, dtype="bf16")
    assert model.dtype == torch.bfloat16
    assert model.device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_four_bit_without_cuda_or_a_cpu_backend_is_a_clear_spec_error(models_dir, tiny_source, monkeypatch):
    monkeypatch.setattr(modeling, "cpu_four_bit", lambda: False)
    with pytest.raises(InvalidSpecError, match=r"^spec.lora.quantization: 4bit \(QLoRA\) needs a CUDA GPU, or a "
                                               r"bitsandbytes with a CPU 4-bit backend \(this one, 0\.\d+"):
        modeling.load_base_model(tiny_source, models_dir=models_dir, quantization="4bit")


@pytest.mark.skipif(not modeling.cpu_four_bit(), reason="this bitsandbytes has no CPU 4-bit backend")
def test_four_bit_on_cpu_loads_nf4_weights_through_bitsandbytes(models_dir, tiny_source):
    from bitsandbytes.nn import Linear4bit

    model = modeling.load_base_model(tiny_source, models_dir=models_dir, quantization="4bit", dtype="bf16")
    projection = model.model.layers[0].self_attn.q_proj
    assert isinstance(projection, Linear4bit) and projection.weight.quant_state.quant_type == "nf4"
    assert model.device.type == "cpu"


def test_pvc_model_loads_through_the_data_root(tmp_path, models_dir):
    claim_dir = tmp_path / "data" / "pvc" / "models" / "tiny"
    embedded.build_tiny_llama(claim_dir)
    source = ModelSource(pvc=PvcPath(claim_name="models", path="/tiny"))
    resolved = modeling.resolve_model(source, data_root=tmp_path / "data")
    assert resolved == modeling.ResolvedModel(claim_dir, "pvc/models/tiny", False)
    assert modeling.load_base_model(source, data_root=tmp_path / "data").config.hidden_size == 64


def test_pvc_without_a_checkpoint_names_the_field(tmp_path):
    source = ModelSource(pvc=PvcPath(claim_name="models", path="/missing"))
    with pytest.raises(InvalidSpecError, match=r"^spec.baseModel.pvc: no config.json in '/missing' on claim 'models'"):
        modeling.resolve_model(source, data_root=tmp_path)


def test_offline_hub_model_not_in_cache_is_a_spec_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    source = ModelSource(hub="someone/not-cached")
    with pytest.raises(InvalidSpecError, match=r"^spec.baseModel.hub: 'someone/not-cached' is not in the local Hub "
                                               r"cache and HF_HUB_OFFLINE is set"):
        modeling.resolve_model(source)


def _random_adapter(models_dir, tiny_source, target: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = modeling.load_base_model(tiny_source, models_dir=models_dir)
    torch.manual_seed(0)
    # init_lora_weights=False makes B non-zero, so the adapter changes the output from step 0.
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(target)
    modeling.load_tokenizer(tiny_source, models_dir=models_dir).save_pretrained(target)


def test_adapter_model_for_serving(tmp_path, models_dir, tiny_source):
    adapter_dir = tmp_path / "adapter"
    _random_adapter(models_dir, tiny_source, adapter_dir)
    base = modeling.load_base_model(tiny_source, models_dir=models_dir)
    model, tokenizer = modeling.load_adapter_model(tiny_source, adapter_dir, models_dir=models_dir)
    merged, _ = modeling.load_adapter_model(tiny_source, adapter_dir, models_dir=models_dir, merge=True)
    assert tokenizer.padding_side == "left"
    assert model.dtype == torch.float32
    assert not model.training
    inputs = tokenizer(["def add(a, b):", "x"], return_tensors="pt", padding=True)
    with torch.no_grad():
        base_logits = base(**inputs).logits
        adapted = model(**inputs).logits
        folded = merged(**inputs).logits
    assert not torch.allclose(base_logits, adapted, atol=1e-4)
    torch.testing.assert_close(adapted, folded, atol=1e-4, rtol=1e-4)
    assert not hasattr(merged, "peft_config")


def test_adapter_directory_must_hold_an_adapter(tmp_path, models_dir, tiny_source):
    with pytest.raises(InvalidSpecError, match="has no adapter_config.json"):
        modeling.load_adapter_model(tiny_source, tmp_path, models_dir=models_dir)


def test_unknown_embedded_name_is_refused(tmp_path):
    with pytest.raises(InvalidSpecError, match=r"^spec.baseModel.embedded: unknown model 'gpt-5'"):
        embedded.embedded_model_dir("gpt-5", tmp_path)


def test_hub_model_downloads_at_a_revision_and_records_the_commit(fake_hub, models_dir, tiny_source):
    from fakehub.server import seed_dir

    sha = seed_dir(fake_hub, "org/tiny", models_dir / "tiny-llama")
    source = ModelSource(hub="org/tiny", revision="main")
    resolved = modeling.resolve_model(source)
    assert resolved.revision == f"org/tiny@{sha}"
    model = modeling.load_base_model(source)
    assert model.config.hidden_size == 64
    assert modeling.load_tokenizer(source).pad_token == "<|im_end|>"


def test_hub_errors_are_classified(fake_hub):
    from fakehub import seed_repo

    from codex_trainer.errors import TransientError

    with pytest.raises(InvalidSpecError, match=r"^spec.baseModel.hub: 'org/missing': repository not found"):
        modeling.resolve_model(ModelSource(hub="org/missing"))
    seed_repo(fake_hub, "org/m", {"config.json": b"{}"})
    with pytest.raises(InvalidSpecError, match=r"revision 'v9': revision not found"):
        modeling.resolve_model(ModelSource(hub="org/m", revision="v9"))
    with pytest.raises(InvalidSpecError, match=r"has no safetensors weights"):
        modeling.resolve_model(ModelSource(hub="org/m"))
    seed_repo(fake_hub, "org/n", {"model.safetensors": b"x"})
    fake_hub.fail("/api/models/org/n", 503, times=10)  # not cached yet, so no offline fallback
    with pytest.raises(TransientError, match=r"^spec.baseModel.hub: 'org/n': Hub unavailable"):
        modeling.resolve_model(ModelSource(hub="org/n"))
