"""``codex-operator``: the operator's handlers under kopf, configured from flags.

Every flag has an environment variable as its default (flags win), so a Deployment can
configure the operator either way. The flags are read once into the frozen
:class:`~codex_operator.config.OperatorConfig`, which reaches the handlers as
``memo.config``, as in kopf's embedded-operator example: nothing is written back into the
environment, and no module keeps state of its own.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any, Mapping, Optional, Sequence

from . import config
from .config import OperatorConfig, Resources, parse_runtime_images

ENV_NAMESPACES = "CODEX_NAMESPACES"
ENV_ALL_NAMESPACES = "CODEX_ALL_NAMESPACES"
ENV_PEERING = "CODEX_PEERING"
ENV_LOG_FORMAT = "CODEX_LOG_FORMAT"
ENV_LIVENESS_PORT = "CODEX_LIVENESS_PORT"
DEFAULT_LIVENESS_PORT = 8080


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _add_scope_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces",
                       help=f"watch this namespace (repeatable; env {ENV_NAMESPACES}, comma-separated)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", default=_truthy(env.get(ENV_ALL_NAMESPACES)),
                       help=f"watch the whole cluster (the default when no namespace is given; env {ENV_ALL_NAMESPACES})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--standalone", action="store_true", help="run alone, without peering (the default)")
    mode.add_argument("--peering", default=env.get(ENV_PEERING) or None, metavar="NAME",
                      help=f"HA: coordinate with other replicas through the KopfPeering NAME (crds/kopf.dev_peerings.yaml; "
                           f"env {ENV_PEERING})")
    p.add_argument("--priority", type=int, default=None, help="peering priority of this replica")


def _add_config_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    p.add_argument("--trainer-image", default=env.get(config.ENV_TRAINER_IMAGE) or config.OperatorConfig.trainer_image,
                   help=f"default trainer image (env {config.ENV_TRAINER_IMAGE})")
    p.add_argument("--runtime-image", action="append", default=[], metavar="RUNTIME=IMAGE",
                   help="default image of a CodexModel runtime, e.g. vllm=vllm/vllm-openai:v0.32.0 (repeatable; env "
                        f"{config.ENV_RUNTIME_IMAGES}, comma-separated)")
    p.add_argument("--sandbox-runtime-class", default=env.get(config.ENV_SANDBOX_RUNTIME_CLASS) or None,
                   metavar="NAME", help="runtimeClassName of the pods that run generated code (gVisor, Kata), "
                   "when a run's spec.evaluation.sandbox names none")
    p.add_argument("--trainer-gpu-memory-gib", type=float, default=float(env.get(config.ENV_TRAINER_GPU_MEMORY) or 0)
                   or None, metavar="GIB", help="one GPU's memory for the trainer's memory plan when a run's "
                   f"spec.resources.gpuMemoryGiB is unset and the trainer cannot read the GPU's (env "
                   f"{config.ENV_TRAINER_GPU_MEMORY})")
    p.add_argument("--metrics-port", type=int, default=int(env.get(config.ENV_METRICS_PORT) or config.DEFAULT_METRICS_PORT),
                   help=f"Prometheus /metrics port (env {config.ENV_METRICS_PORT})")
    p.add_argument("--liveness-port", type=int, default=int(env.get(ENV_LIVENESS_PORT) or DEFAULT_LIVENESS_PORT),
                   help=f"port of kopf's /healthz liveness endpoint, 0 to disable (env {ENV_LIVENESS_PORT})")
    p.add_argument("--log-format", choices=("json", "plain", "full"), default=env.get(ENV_LOG_FORMAT) or "json",
                   help=f"log format (default json; env {ENV_LOG_FORMAT})")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")


def parser(environ: Optional[Mapping[str, str]] = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(prog="codex-operator", description=__doc__.splitlines()[0])
    _add_scope_flags(p, env)
    _add_config_flags(p, env)
    return p


def operator_config(args: argparse.Namespace, environ: Mapping[str, str]) -> OperatorConfig:
    """The frozen config the flags (and, below them, the environment) amount to."""
    runtime_images = parse_runtime_images(environ.get(config.ENV_RUNTIME_IMAGES))
    runtime_images.update(parse_runtime_images(",".join(args.runtime_image)))
    return OperatorConfig(
        trainer_image=args.trainer_image,
        runtime_images=runtime_images,
        trainer_resources=Resources(environ.get(config.ENV_TRAINER_CPU) or None,
                                    environ.get(config.ENV_TRAINER_MEMORY) or None),
        server_resources=Resources(environ.get(config.ENV_SERVER_CPU) or None,
                                   environ.get(config.ENV_SERVER_MEMORY) or None),
        image_pull_policy=environ.get(config.ENV_IMAGE_PULL_POLICY) or None,
        sandbox_runtime_class=args.sandbox_runtime_class or None,
        trainer_gpu_memory_gib=args.trainer_gpu_memory_gib,
        metrics_port=args.metrics_port,
        bind_host=environ.get(config.ENV_POD_IP) or "0.0.0.0",
        instance=environ.get("HOSTNAME") or socket.gethostname(),
    )


def run_options(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of ``kopf.run`` the flags amount to: scope, peering and liveness."""
    namespaces = args.namespaces or [n.strip() for n in (environ.get(ENV_NAMESPACES) or "").split(",") if n.strip()]
    clusterwide = args.all_namespaces or not namespaces
    peering = args.peering if args.peering and not args.standalone else None
    options: dict[str, Any] = {
        "clusterwide": clusterwide,
        "namespaces": [] if clusterwide else namespaces,
        "standalone": peering is None,
        "peering_name": peering,
        "priority": args.priority if peering is not None and args.priority is not None else 0,
        "liveness_endpoint": None,
    }
    if args.liveness_port:
        host = environ.get(config.ENV_POD_IP) or "0.0.0.0"
        options["liveness_endpoint"] = f"http://{host}:{args.liveness_port}/healthz"
    return options


def main(argv: Optional[Sequence[str]] = None) -> None:
    environ = dict(os.environ)
    args = parser(environ).parse_args(argv)
    try:
        cfg = operator_config(args, environ)
    except ValueError as error:
        parser(environ).error(str(error))
    import kopf  # imported late: --help stays fast

    from . import handlers  # noqa: F401  (registers the handlers with kopf)

    kopf.configure(debug=args.debug, verbose=args.verbose, quiet=args.quiet,
                   log_format=kopf.LogFormat[args.log_format.upper()])
    kopf.run(memo=kopf.Memo(config=cfg), **run_options(args, environ))


if __name__ == "__main__":
    main(sys.argv[1:])
