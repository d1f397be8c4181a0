"""The frozen config (flags, env fallbacks, secrets), per-row decoding, and per-row sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codex_api.common import ModelSource
from codex_serve.config import HubRef, available_cpus, load_config
from codex_serve.engine import RowSampling
from codex_serve.rows import Delta, Finished, Row, SamplingParams, StopStringText


def test_flags_win_over_env_and_env_fills_the_rest():
    environ = {"CODEX_SERVE_BASE_MODEL": "embedded:tiny-llama", "CODEX_SERVE_MAX_NEW_TOKENS": "99",
               "CODEX_SERVE_MASK_SECRETS": "false", "CODEX_SERVE_PORT": "9000", "CODEX_API_KEY": "k-123",
               "HF_TOKEN": "hf_abc"}
    config = load_config(["--port", "8123", "--adapter", "hub:org/lora@v2", "--merge-adapter"], environ)
    assert config.base_model == ModelSource(embedded="tiny-llama")
    assert config.adapter == HubRef("org/lora", "v2")
    assert (config.port, config.max_new_tokens, config.mask_secrets, config.merge_adapter) == (8123, 99, False, True)
    assert (config.api_key, config.hf_token) == ("k-123", "hf_abc")
    assert "k-123" not in repr(config) and "hf_abc" not in repr(config)


@pytest.mark.parametrize("value,expected", [
    ("embedded:smollm2-135m-instruct", ModelSource(embedded="smollm2-135m-instruct")),
    ("hub:HuggingFaceTB/SmolLM2-135M-Instruct@main", ModelSource(hub="HuggingFaceTB/SmolLM2-135M-Instruct",
                                                                 revision="main")),
    ("hub:org/model", ModelSource(hub="org/model")),
    ("/var/run/codex/data/pvc/models/qwen", Path("/var/run/codex/data/pvc/models/qwen")),
], ids=["embedded", "hub-at-revision", "hub", "directory"])
def test_base_model_forms(value, expected):
    config = load_config(["--base-model", value], {})
    assert config.base_model == expected
    assert (config.mask_secrets, config.max_concurrency, config.host) == (True, 4, "0.0.0.0")


@pytest.mark.parametrize("argv,dtype", [([], None), (["--dtype", "float32"], "float32"),
                                        (["--dtype", "auto"], None)], ids=["default", "float32", "auto"])
def test_dtype_is_the_devices_default_unless_named(argv, dtype):
    assert load_config(["--base-model", "embedded:tiny-llama", *argv], {}).dtype == dtype
    assert load_config(["--base-model", "embedded:tiny-llama"], {"CODEX_SERVE_DTYPE": "bfloat16"}).dtype == "bfloat16"


@pytest.mark.parametrize("argv", [["--base-model", "embedded:gpt-5"], ["--base-model", "s3://bucket/model"],
                                  ["--base-model", "hub:"], [], ["--base-model", "/m", "--max-concurrency", "0"],
                                  ["--base-model", "/m", "--dtype", "int8"]],
                         ids=["unknown-embedded", "unknown-scheme", "empty-hub", "missing", "zero-concurrency",
                              "unknown-dtype"])
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        load_config(argv, {})
    assert exited.value.code == 2


def test_available_cpus_honours_the_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, available_cpus(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == available_cpus(tmp_path / "none") >= 1


class ByteTokenizer:
    """Token i is byte i: multi-byte characters span tokens, as with byte-level BPE."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def feed(text: str, stop=(), max_tokens=100):
    events = []
    row = Row(0, [], SamplingParams(max_tokens=max_tokens, stop=tuple(stop)), events.append,
              eos_ids=frozenset({0}), text=StopStringText(ByteTokenizer(), stop, context=list(b"ctx: ")))
    for byte in text.encode() + b"\0":
        if row.step(byte):
            break
    row.finish("length")
    return [e.text for e in events if isinstance(e, Delta)], events[-1]


def test_multibyte_characters_are_never_split_across_deltas():
    deltas, end = feed("naïve → café")
    assert "".join(deltas) == "naïve → café" and all("\ufffd" not in d for d in deltas)
    assert end == Finished(0, "stop", len("naïve → café".encode()))


def test_stop_string_spanning_tokens_ends_the_row_and_is_not_sent():
    deltas, end = feed("return a + b\n\nprint(x)", stop=["\n\n", "zz"])
    assert "".join(deltas) == "return a + b"
    assert end.reason == "stop"


def test_a_partial_stop_string_is_held_then_released():
    deltas, end = feed("a\nb", stop=["\n\n"])
    assert deltas == ["a", "\nb"]  # "\n" waited until "b" ruled the stop string out
    assert end.reason == "stop"  # then eos


def test_max_tokens_ends_the_row_with_length():
    deltas, end = feed("abcdefgh", max_tokens=3)
    assert "".join(deltas) == "abc" and end == Finished(0, "length", 3)


def test_row_sampling_greedy_rows_pick_the_argmax_and_top_p_trims_the_tail():
    scores = torch.tensor([[1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0]])
    out = RowSampling(torch.tensor([0.0, 1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5]))(None, scores.clone())
    assert out[0].tolist() == [float("-inf"), 0.0, float("-inf"), float("-inf")]
    assert torch.allclose(out[1], scores[1])
    # temperature 0.5 doubles the logits; the top token alone already covers half the mass
    assert out[2].tolist() == [float("-inf"), 6.0, float("-inf"), float("-inf")]
