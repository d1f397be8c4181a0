"""``codex-train``: run one CodexTrainingRun in a cluster, run it on a laptop, or prepare the embedded models.

A run with evaluation tasks runs in the cluster as three stages (codex_api.stages; stages.py):
``run --stage train``, ``sandbox`` and ``publish``. Exit codes follow codex_api.contract: 0 success,
42 invalid spec or data, 43 gates not met, 44 preempted (a checkpoint was saved), 45 transient.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from codex_api import contract, paths, stages

from .config import TrainerEnv
from .errors import TrainerError
from .logs import Redactor, setup_logging
from .stages import execute, fail_early, load_run


def _launch_torchrun(topology, argv: list[str]) -> int:
    """Run this command again under torchrun; keep the exit-code contract and forward SIGTERM."""
    from .launcher import ENV_RESULT_DIR, node_exit_code, torchrun_argv

    with tempfile.TemporaryDirectory(prefix="codex-result-") as result_dir:
        child = subprocess.Popen(torchrun_argv(topology, argv), env={**os.environ, ENV_RESULT_DIR: result_dir})
        signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
        code = child.wait()
        return node_exit_code(Path(result_dir), code, contract.EXIT_TRANSIENT)


def _run(args: argparse.Namespace) -> int:
    from .launcher import ENV_RESULT_DIR, needs_torchrun, result_file, topology_from_env, wants_sharding

    env = dataclasses.replace(TrainerEnv.from_env(), termination_message_path=args.termination_log)
    setup_logging(Redactor([env.hf_token]))
    try:
        topology = topology_from_env(os.environ)
        run = load_run(args.config)
        if needs_torchrun(topology, os.environ, sharded=wants_sharding(run.spec.training)):
            stage = ["--stage", args.stage, "--work-dir", str(args.work_dir)] if args.stage else []
            return _launch_torchrun(topology, ["run", "--config", str(args.config),
                                               "--termination-log", str(args.termination_log), *stage])
    except TrainerError as error:
        return fail_early(error, env)
    from .checkpoints import PreemptionGuard
    from .recipe import Recipe
    from .sinks import LogSink, StatusPatcher

    sinks = [LogSink()]
    if env.run_name and env.run_namespace:
        sinks.append(StatusPatcher(env.run_name, env.run_namespace))
    code = execute(Recipe(run, env, sinks=sinks, guard=PreemptionGuard().install(), hub_endpoint=env.hf_endpoint,
                          work_dir=args.work_dir if args.stage == stages.TRAIN else None))
    if os.environ.get(ENV_RESULT_DIR):
        result_file(Path(os.environ[ENV_RESULT_DIR]), int(os.environ.get("LOCAL_RANK", "0"))).write_text(str(code))
    return code


def _local(args: argparse.Namespace) -> int:
    from .checkpoints import PreemptionGuard
    from .local import (ConsoleBar, choose_code_gates, final_table, load_manifest, local_env, stage_local_data,
                        with_tiny_model)
    from .recipe import Recipe

    process_env = TrainerEnv.from_env()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = open(workdir / "trainer.log", "a", encoding="utf-8")
    setup_logging(Redactor([process_env.hf_token]), stream=sys.stderr if args.verbose else log_file)
    try:
        run, documents = load_manifest(args.manifest, args.run)
    except TrainerError as error:
        print(f"codex-train local: {error}", file=sys.stderr)
        return error.exit_code
    if args.tiny:
        run = with_tiny_model(run)
    run, code_gates_skipped = choose_code_gates(run, skip=args.skip_code_gates)
    env = local_env(workdir, run, process_env, fresh=not args.resume)
    stage_local_data(run, documents, env.data_root)
    print(f"codex-train local: {run.metadata.name} on {run.spec.base_model.embedded or run.spec.base_model.hub or 'pvc'}"
          f" (logs: {workdir / 'trainer.log'})")
    # Without an output PVC the base model's scores would sit with the checkpoints, which a fresh
    # local run clears: keep them in the work dir instead.
    baselines = None if run.spec.output.pvc is not None else workdir / ".codex-baselines"
    recipe = Recipe(run, env, sinks=[ConsoleBar()], guard=PreemptionGuard().install(), output_dir=args.output,
                    hub_endpoint=env.hf_endpoint, baseline_dir=baselines)
    code = execute(recipe)
    if code in (contract.EXIT_OK, contract.EXIT_GATES_NOT_MET):
        final_table(recipe.results, code, recipe.output_dir(), code_gates_skipped=code_gates_skipped)
    else:
        print(f"codex-train local: failed ({code}): {env.termination_message_path.read_text()}", file=sys.stderr)
    return code


def _sandbox(args: argparse.Namespace) -> int:
    from .stages import run_sandbox

    return run_sandbox(args.work_dir, args.termination_log)


def _publish(args: argparse.Namespace) -> int:
    from .stages import publish_command

    return publish_command(args.config, args.work_dir, args.termination_log)


def _prepare_embedded(args: argparse.Namespace) -> int:
    from .embedded import copy_embedded, embedded_model_dir, prepare_all

    setup_logging(Redactor())
    models_dir = args.models_dir or TrainerEnv.from_env().models_dir  # --models-dir, else $CODEX_MODELS_DIR
    if args.model is None:
        prepared = prepare_all(models_dir)
    elif args.copy_to is None:
        prepared = {args.model: embedded_model_dir(args.model, models_dir)}
    else:
        prepared = {args.model: copy_embedded(args.model, args.copy_to, models_dir)}
    for name, path in prepared.items():
        print(json.dumps({"event": "embedded.ready", "model": name, "dir": str(path)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the CodexTrainingRun the operator mounted (in-cluster)")
    run.add_argument("--config", type=Path, default=Path(paths.SPEC_FILE), help="the rendered run (YAML)")
    _termination_log(run, "the TrainerReport")
    run.add_argument("--stage", choices=[stages.TRAIN], default=None, help="run only the train stage of a run "
                     "with evaluation tasks: hand the completions and the adapter off to the work dir")
    _work_dir(run)
    run.set_defaults(func=_run)
    sandbox = commands.add_parser("sandbox", help="run the programs the train stage handed off (no credential, "
                                  "no network): one status per sample to the termination log")
    _work_dir(sandbox)
    _termination_log(sandbox, "the SandboxReport")
    sandbox.set_defaults(func=_sandbox)
    publish = commands.add_parser("publish", help="judge the handed-off samples on the sandbox's statuses "
                                  f"(${stages.ENV_SANDBOX_RESULTS}), save the adapter, push it if the gates pass")
    publish.add_argument("--config", type=Path, default=Path(paths.SPEC_FILE), help="the rendered run (YAML)")
    _work_dir(publish)
    _termination_log(publish, "the TrainerReport")
    publish.set_defaults(func=_publish)
    local = commands.add_parser("local", help="run a CodexTrainingRun from a manifest on this machine")
    local.add_argument("manifest", type=Path, help="multi-document YAML with the run and its ConfigMaps")
    local.add_argument("--run", help="the run's name when the file holds several")
    local.add_argument("--tiny", action="store_true", help="swap the base model for the embedded tiny-llama")
    local.add_argument("--output", type=Path, default=None, help="adapter directory (default: the output PVC path "
                       "under the workdir)")
    local.add_argument("--workdir", type=Path, default=Path(".codex-local"), help="data, checkpoints and logs")
    local.add_argument("--resume", action="store_true", help="resume from the workdir's checkpoints")
    local.add_argument("--verbose", action="store_true", help="stream the JSON logs to stderr")
    local.add_argument("--skip-code-gates", action="store_true", help="skip pass@k and the code gates, which run "
                       "the model's generated code on this machine without isolation (loss and perplexity are "
                       "still computed)")
    local.set_defaults(func=_local)
    prepare = commands.add_parser("prepare-embedded", help="materialise the embedded models (image build time)")
    prepare.add_argument("--models-dir", type=Path, default=None,
                         help="target directory (default: /opt/codex/models if writable, else the user cache)")
    prepare.add_argument("--model", default=None, help="only this embedded model (default: all)")
    prepare.add_argument("--copy-to", type=Path, default=None,
                         help="with --model: copy the model's files into this directory (a serving pod's volume)")
    prepare.set_defaults(func=_prepare_embedded)
    return parser


def _work_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path(stages.WORK_DIR),
                        help="the run's work volume, where the train stage hands off to the sandbox and publish")


def _termination_log(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--termination-log", type=Path, default=Path(paths.TERMINATION_MESSAGE_PATH),
                        help=f"where {what} goes (the container's terminationMessagePath)")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
