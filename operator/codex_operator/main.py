"""``codex-operator``: kopf run, with the operator's handlers, flags and defaults.

Every flag has an environment variable (flags win), so a Deployment can configure the
operator either way. Values the handlers need are read once at startup into the frozen
:class:`~codex_operator.config.OperatorConfig`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from . import config

ENV_NAMESPACES = "CODEX_NAMESPACES"
ENV_ALL_NAMESPACES = "CODEX_ALL_NAMESPACES"
ENV_PEERING = "CODEX_PEERING"
ENV_LOG_FORMAT = "CODEX_LOG_FORMAT"
ENV_LIVENESS_PORT = "CODEX_LIVENESS_PORT"
DEFAULT_LIVENESS_PORT = 8080


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="codex-operator", description=__doc__.splitlines()[0])
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
    p.add_argument("--log-format", choices=("json", "plain", "full"), default=env.get(ENV_LOG_FORMAT) or "json",
                   help=f"log format (default json; env {ENV_LOG_FORMAT})")
    p.add_argument("--liveness-port", type=int, default=int(env.get(ENV_LIVENESS_PORT) or DEFAULT_LIVENESS_PORT),
                   help=f"port of kopf's /healthz liveness endpoint, 0 to disable (env {ENV_LIVENESS_PORT})")
    p.add_argument("--metrics-port", type=int, default=None,
                   help=f"Prometheus /metrics port (default {config.DEFAULT_METRICS_PORT}; env {config.ENV_METRICS_PORT})")
    p.add_argument("--trainer-image", default=None, help=f"default trainer image (env {config.ENV_TRAINER_IMAGE})")
    p.add_argument("--serve-image", default=None, help=f"default codex-serve image (env {config.ENV_SERVE_IMAGE})")
    p.add_argument("--vllm-image", default=None, help=f"default vLLM image (env {config.ENV_VLLM_IMAGE})")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")
    return p


def kopf_args(args: argparse.Namespace, environ: dict[str, str]) -> list[str]:
    """The `kopf run` command line the flags amount to."""
    out = ["run", "--module", "codex_operator.handlers", f"--log-format={args.log_format}"]
    namespaces = args.namespaces or [n.strip() for n in (environ.get(ENV_NAMESPACES) or "").split(",") if n.strip()]
    if namespaces and not args.all_namespaces:
        for namespace in namespaces:
            out += ["--namespace", namespace]
    else:
        out.append("--all-namespaces")
    if args.peering and not args.standalone:
        out += ["--peering", args.peering]
        if args.priority is not None:
            out += ["--priority", str(args.priority)]
    else:
        out.append("--standalone")
    if args.liveness_port:
        host = environ.get(config.ENV_POD_IP) or "0.0.0.0"
        out.append(f"--liveness=http://{host}:{args.liveness_port}/healthz")
    if args.quiet:
        out.append("--quiet")
    if args.verbose:
        out.append("--verbose")
    if args.debug:
        out.append("--debug")
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    # Flags override the environment that OperatorConfig.from_env() reads once at startup.
    for value, name in ((args.metrics_port, config.ENV_METRICS_PORT), (args.trainer_image, config.ENV_TRAINER_IMAGE),
                        (args.serve_image, config.ENV_SERVE_IMAGE), (args.vllm_image, config.ENV_VLLM_IMAGE)):
        if value is not None:
            os.environ[name] = str(value)
    from kopf.cli import main as kopf_main  # imported late: --help stays fast

    kopf_main.main(args=kopf_args(args, dict(os.environ)), prog_name="codex-operator", standalone_mode=True)


if __name__ == "__main__":
    main(sys.argv[1:])
