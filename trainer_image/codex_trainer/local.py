"""``codex-train local``: the in-cluster pipeline on a laptop, from the same multi-document YAML.

ConfigMaps in the file become files under ``<workdir>/data/configmap/<name>/<key>`` and every
PVC the run mentions becomes a directory ``<workdir>/data/pvc/<claim>/``, which is exactly the
layout the operator mounts under ``paths.DATA_ROOT``. Progress goes to the terminal as a bar,
the JSON logs to ``<workdir>/trainer.log``, and a table of results is printed at the end.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any, Optional, TextIO

import yaml
from codex_api import CodexTrainingRun, SpecError, parse, paths
from codex_api.common import ConfigMapKeyRef, ModelSource

from .config import TrainerEnv
from .errors import InvalidSpecError

BAR_WIDTH = 28


def load_manifest(manifest: Path, run_name: Optional[str] = None) -> tuple[CodexTrainingRun, list[dict[str, Any]]]:
    """The CodexTrainingRun in ``manifest`` (the only one, or the one named) and the other documents."""
    try:
        documents = [d for d in yaml.safe_load_all(manifest.read_text()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as error:
        raise InvalidSpecError(f"{manifest}: cannot read the YAML ({type(error).__name__}: {error})") from None
    runs = [d for d in documents if d.get("kind") == "CodexTrainingRun"
            and (run_name is None or (d.get("metadata") or {}).get("name") == run_name)]
    if len(runs) != 1:
        names = [(d.get("metadata") or {}).get("name") for d in documents if d.get("kind") == "CodexTrainingRun"]
        raise InvalidSpecError(f"{manifest}: expected one CodexTrainingRun{f' named {run_name!r}' if run_name else ''}"
                               f", found {names or 'none'}; pick one with --run")
    try:
        run = parse(CodexTrainingRun, runs[0])
    except SpecError as error:
        raise InvalidSpecError("; ".join(error.problems)) from None
    if run.metadata.namespace is None:
        run = run.model_copy(update={"metadata": run.metadata.model_copy(update={"namespace": "default"})})
    return run, [d for d in documents if d is not runs[0]]


def stage_local_data(run: CodexTrainingRun, documents: list[dict[str, Any]], data_root: Path) -> None:
    """Write the file's ConfigMaps and create the run's PVC directories under ``data_root``."""
    root = PurePosixPath(data_root)
    for document in documents:
        if document.get("kind") == "ConfigMap":
            name = document["metadata"]["name"]
            for key, value in (document.get("data") or {}).items():
                target = Path(paths.configmap_file(ConfigMapKeyRef(name=name, key=key), root))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(value)
    spec = run.spec
    claims = {ref.claim_name for ref in (spec.base_model.pvc, spec.dataset.source.pvc, spec.output.pvc,
                                         spec.evaluation.tasks.pvc if spec.evaluation.tasks else None) if ref}
    claims |= {d["metadata"]["name"] for d in documents if d.get("kind") == "PersistentVolumeClaim"}
    for claim in claims:
        Path(paths.pvc_dir(claim, root)).mkdir(parents=True, exist_ok=True)


def local_env(workdir: Path, run: CodexTrainingRun, process_env: TrainerEnv, fresh: bool) -> TrainerEnv:
    checkpoints = workdir / "checkpoints" / (run.metadata.name or "run")
    if fresh and checkpoints.exists():
        shutil.rmtree(checkpoints)
    return TrainerEnv(data_root=workdir / "data", checkpoint_dir=checkpoints, scratch_dir=workdir / "scratch",
                      termination_message_path=workdir / "termination-log", models_dir=process_env.models_dir,
                      image="local", hf_token=process_env.hf_token, hf_endpoint=process_env.hf_endpoint)


def with_tiny_model(run: CodexTrainingRun) -> CodexTrainingRun:
    spec = run.spec.model_copy(update={"base_model": ModelSource(embedded="tiny-llama")})
    return run.model_copy(update={"spec": spec})


def choose_code_gates(run: CodexTrainingRun, skip: bool,
                      stream: Optional[TextIO] = None) -> tuple[CodexTrainingRun, bool]:
    """The run as local mode evaluates it, and whether its code gates were skipped.

    A laptop has no cluster to isolate generated code with: the same executor runs it here, under its
    limits but with this user's files, network and processes in reach, so that is said once, before
    anything runs. ``skip`` drops the tasks instead (loss and perplexity are still computed).
    """
    evaluation = run.spec.evaluation
    if evaluation.tasks is None:
        return run, False
    if not skip:
        stream = stream or sys.stdout
        stream.write("codex-train local: pass@k and the code gates run the model's generated code on this machine, "
                     "WITHOUT ISOLATION (no sandbox pod: your files, network and processes are in its reach); "
                     "--skip-code-gates skips them\n")
        stream.flush()
        return run, False
    spec = run.spec.model_copy(update={"evaluation": evaluation.model_copy(update={"tasks": None})})
    return run.model_copy(update={"spec": spec}), True


class ConsoleBar:
    """A progress sink drawing one line: bar, step/total, loss, ETA and stage."""

    def __init__(self, stream: Optional[TextIO] = None, min_interval: float = 0.5):
        self.stream, self.min_interval = stream or sys.stdout, min_interval  # the current one, not the one at import
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._stage: Optional[str] = None

    def __call__(self, progress: dict[str, Any], force: bool = False) -> None:
        stage = progress.get("stage")
        if stage != self._stage:
            if self._stage == "train" and self.tty:
                self.stream.write("\n")
            self._stage = stage
            if stage != "train":
                self.stream.write(f"» {stage}\n")
                self.stream.flush()
                return
        now = time.monotonic()
        if stage != "train" or (not force and now - self._last < self.min_interval):
            return
        self._last = now
        total, step = progress.get("totalSteps") or 0, progress.get("step") or 0
        filled = int(BAR_WIDTH * step / total) if total else 0
        loss = progress.get("loss")
        eta = progress.get("etaSeconds")
        parts = [f"train [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {step}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if eta is not None:
            parts.append(f"ETA {eta // 60}:{eta % 60:02d}")
        line = "  ".join(parts)
        self.stream.write(("\r" + line.ljust(78)) if self.tty else line + "\n")
        self.stream.flush()


def final_table(results: dict[str, Any], exit_code: int, output_dir: Path, stream: Optional[TextIO] = None,
                code_gates_skipped: bool = False) -> None:
    stream = stream or sys.stdout  # the current one, not the one at import
    rows: list[tuple[str, str]] = []
    if code_gates_skipped:
        rows.append(("pass@k, code gates", "skipped (--skip-code-gates): no generated code was run"))
    # pass@k maps: the tuned adapter's, the base model's and the difference.
    prefixes = {"passAtK": "", "basePassAtK": "base ", "passAtKDelta": "delta "}
    for key, value in (results.get("metrics") or {}).items():
        if isinstance(value, dict):
            signed = "+.3f" if key == "passAtKDelta" else ".3f"
            rows += [(f"{prefixes.get(key, key + ' ')}{name}", format(v, signed)) for name, v in value.items()]
        elif value is not None:
            rows.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
    for name, gate in (results.get("gates") or {}).items():
        if isinstance(gate, dict):
            mark = "ok" if gate["passed"] else "FAIL"
            rows.append((f"gate {name}", f"{gate['value']:.3f} (>= {gate['threshold']}) {mark}"
                         if name != "perplexity" else f"{gate['value']:.3f} (<= {gate['threshold']}) {mark}"))
    rows += [("adapter", str(output_dir)), ("exit code", str(exit_code))]
    width = max(len(name) for name, _ in rows)
    stream.write("\n" + "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows) + "\n")
    stream.flush()
