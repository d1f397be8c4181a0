"""Save the adapter with its tokenizer, model card and results; push it to the Hub when asked.

The output directory always receives ``adapter_config.json``, ``adapter_model.safetensors``, the
tokenizer files, ``README.md`` (the model card) and ``results.json``. A Hub destination gets the
same folder as one commit on its branch; 429 and 5xx answers are retried with exponential backoff.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Optional, TypeVar

from codex_api import paths
from codex_api.training_run import Artifact, CodexTrainingRun, HubDestination

from .config import TrainerEnv
from .errors import TrainerError, TransientError
from .hub_errors import hub_error, is_retryable
from .logs import event

T = TypeVar("T")
# The public repo an embedded model was made from, for the card's base_model metadata.
UPSTREAM_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
CARD_NAME = "README.md"
RESULTS_NAME = "results.json"


def with_retries(call: Callable[[], T], what: str, attempts: int = 5, base_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried on 429/5xx/connection errors with delays base, 2*base, 4*base, ..."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:  # classified below; the Hub client raises many types
            if not is_retryable(error) or attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            event("push", "retry", what=what, attempt=attempt, error=type(error).__name__,
                  status=getattr(getattr(error, "response", None), "status_code", None), delay_seconds=delay)
            sleep(delay)
    raise AssertionError("unreachable")


def push_folder(folder: Path, hub: HubDestination, token: Optional[str], message: str,
                endpoint: Optional[str] = None, base_delay: float = 1.0) -> str:
    """Create the repo (and branch) if needed, upload ``folder`` as one commit; return the commit SHA.

    Raises:
        InvalidSpecError: the token is refused or the repo cannot be written.
        TransientError: the Hub kept answering 429/5xx.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token or False)
    repo = hub.repo_id
    try:
        with_retries(lambda: api.create_repo(repo, private=hub.private, exist_ok=True), "create_repo",
                     base_delay=base_delay)
        if hub.branch != "main":
            with_retries(lambda: api.create_branch(repo, branch=hub.branch, exist_ok=True), "create_branch",
                         base_delay=base_delay)
        commit = with_retries(lambda: api.upload_folder(repo_id=repo, folder_path=str(folder), revision=hub.branch,
                                                        commit_message=message), "upload_folder",
                              base_delay=base_delay)
    except TrainerError:
        raise
    except Exception as error:
        classified = hub_error(error, "spec.output.hub.repoId", repo, hub.branch)
        if is_retryable(error):
            classified = TransientError(f"{classified} (gave up after retries)")
        raise classified from None
    event("push", "pushed", repo=repo, branch=hub.branch, commit=commit.oid)
    return commit.oid


def push_adapter(folder: Path, run: CodexTrainingRun, artifact: Artifact, token: Optional[str],
                 endpoint: Optional[str] = None, base_delay: float = 1.0) -> Artifact:
    """``folder`` pushed to the run's Hub destination; ``artifact`` with the commit as its revision."""
    hub = run.spec.output.hub
    commit = push_folder(folder, hub, token, f"codex-operator: {run.metadata.name}", endpoint=endpoint,
                         base_delay=base_delay)
    return artifact.model_copy(update={"hub_repo": hub.repo_id, "commit_sha": commit, "revision": commit})


def output_dir(spec: Any, env: TrainerEnv) -> Path:
    """Where the adapter folder is written: the output PVC's path when there is one, else scratch."""
    if spec.output.pvc is not None:
        return Path(paths.pvc_file(spec.output.pvc, PurePosixPath(env.data_root)))
    return env.scratch_dir / "adapter"


def saved_artifact(spec: Any, folder: Path) -> Artifact:
    """The artifact of the adapter folder as saved: its digest as the revision, and where it lies."""
    digest, size = adapter_digest(folder)
    pvc = spec.output.pvc
    return Artifact(revision=f"sha256:{digest}", size_bytes=size, path=pvc.path if pvc else None,
                    claim_name=pvc.claim_name if pvc else None)


def summary(spec: Any, sections: Mapping[str, Optional[Any]], data: Optional[dict[str, Any]],
            timings: Mapping[str, float]) -> dict[str, Any]:
    """The results.json sections every run writes: metrics, gates, artifact and lineage (wire form), the data
    summary, the timings and the hyperparameters."""
    return {**{name: value.to_wire() if value is not None else None for name, value in sections.items()},
            "data": data, "timings": dict(timings),
            "hyperparameters": {"method": spec.method, "lora": spec.lora.to_wire(), "training": spec.training.to_wire()}}


def base_model_name(run: CodexTrainingRun) -> str:
    source = run.spec.base_model
    if source.hub:
        return source.hub
    if source.embedded:
        return UPSTREAM_IDS.get(source.embedded, f"embedded/{source.embedded}")
    return f"pvc/{source.pvc.claim_name}{source.pvc.path}"


def save_adapter(model: Any, tokenizer: Any, output_dir: Path, run: CodexTrainingRun,
                 state_dict: Optional[dict] = None) -> None:
    """The adapter and tokenizer, with a portable base model reference in adapter_config.json.

    ``state_dict``: the model's weights gathered whole, when the model itself holds only shards."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(output_dir)
    config_path = output_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model_name(run)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def adapter_digest(output_dir: Path) -> tuple[str, int]:
    """sha256 of the adapter weights and config, and the size of the folder in bytes."""
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((output_dir / name).read_bytes())
    size = sum(p.stat().st_size for p in output_dir.iterdir() if p.is_file())
    return digest.hexdigest(), size


def write_results(output_dir: Path, results: dict[str, Any]) -> None:
    (output_dir / RESULTS_NAME).write_text(json.dumps(results, indent=2, sort_keys=True, default=str))


def _table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def write_model_card(output_dir: Path, run: CodexTrainingRun, results: dict[str, Any]) -> None:
    """README.md with Hub metadata: base model, metrics, gates, hyperparameters and lineage."""
    from huggingface_hub import ModelCard, ModelCardData

    spec = run.spec
    data = ModelCardData(
        base_model=base_model_name(run) if (spec.base_model.hub or spec.base_model.embedded in UPSTREAM_IDS) else None,
        library_name="peft",
        tags=["codex-operator", "lora", spec.method, "code"],
        pipeline_tag="text-generation",
    )
    metrics = {k: v for k, v in (results.get("metrics") or {}).items() if k != "passAtK"}
    metrics.update((results.get("metrics") or {}).get("passAtK", {}))
    gates = results.get("gates") or {}
    gate_rows = {name: f"{g['value']} (threshold {g['threshold']}, {'passed' if g['passed'] else 'FAILED'})"
                 for name, g in gates.items() if isinstance(g, dict)}
    hyper = {"method": spec.method, **{f"lora.{k}": v for k, v in spec.lora.to_wire().items()},
             **{f"training.{k}": v for k, v in spec.training.to_wire().items()}}
    body = "\n\n".join([
        f"---\n{data.to_yaml()}\n---",
        f"# {run.metadata.name or 'codex adapter'}",
        f"A LoRA adapter for `{base_model_name(run)}`, fine-tuned with {spec.method.upper()} by "
        f"[codex-operator](https://github.com/codex-operator) from the CodexTrainingRun "
        f"`{run.metadata.namespace or 'default'}/{run.metadata.name}`.",
        "## Metrics\n\n" + _table(metrics),
        "## Gates\n\n" + (f"Verdict: **{'passed' if gates.get('passed') else 'not passed'}**\n\n" + _table(gate_rows)
                          if gates else "No gates were evaluated."),
        "## Hyperparameters\n\n" + _table(hyper),
        "## Lineage\n\n" + _table(results.get("lineage") or {}),
        "## Use\n\n```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        f"base = AutoModelForCausalLM.from_pretrained({base_model_name(run)!r})\n"
        "model = PeftModel.from_pretrained(base, \"<this repo or directory>\")\n```",
    ])
    ModelCard(body).save(output_dir / CARD_NAME)
