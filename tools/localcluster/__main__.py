"""python -m localcluster {up,down,env,logs,build,gomod}.

    eval "$(python -m localcluster up --gpu 1)"   # starts detached, prints KUBECONFIG=...
    kubectl get nodes
    python -m localcluster logs default my-pod
    python -m localcluster down
"""

from __future__ import annotations

import argparse
import shlex
import sys

from . import build, vllmenv
from .cluster import DEFAULT_CAPACITY, DEFAULT_RUNNABLE, NETWORK_MODES, LocalCluster, NodeSpec, default_workdir


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} must look like KEY=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed


def _nodes(args: argparse.Namespace) -> list[NodeSpec]:
    capacity = {**DEFAULT_CAPACITY, "cpu": args.cpu, "memory": args.memory}
    if args.gpu:
        capacity["nvidia.com/gpu"] = str(args.gpu)
    labels = _key_values(args.label, "--label")
    names = args.node or ["local-node"]
    return [NodeSpec(name, labels, capacity) for name in names]


def cmd_up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.workdir, nodes=_nodes(args),
                           runnable_image_prefixes=args.runnable_image_prefix or DEFAULT_RUNNABLE,
                           skip_image_prefixes=args.skip_image_prefix, host_env=args.host_env,
                           network=args.network)
    cluster.up(timeout=args.timeout)
    print(f"# cluster up in {cluster.state['up_seconds']}s; logs in {cluster.workdir / 'logs'}", file=sys.stderr)
    print(f"KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    try:
        cluster = LocalCluster.attach(args.workdir)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 0
    cluster.down()
    print(f"# cluster in {cluster.workdir} stopped", file=sys.stderr)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.workdir)
    if not cluster.is_running():
        print(f"cluster in {cluster.workdir} is not running", file=sys.stderr)
        return 1
    for key, value in cluster.env().items():
        print(f"{key}={shlex.quote(value)}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    cluster = LocalCluster.attach(args.workdir)
    try:
        sys.stdout.write(cluster.pod_logs(args.namespace, args.pod, args.container, args.previous))
    except LookupError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    print(build.build(force=args.force))
    if args.network:
        print(build.build_network())
    if args.vllm:
        print(vllmenv.install())
    return 0


def cmd_gomod(args: argparse.Namespace) -> int:
    build.generate_gomod()
    print(f"wrote {build.KUBE_MODULE_DIR} and {build.ETCD_MODULE_DIR}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help=f"cluster files (default {default_workdir()})")
    # --workdir is accepted after the command too: `up --workdir DIR` and `--workdir DIR up` are the same.
    workdir = argparse.ArgumentParser(add_help=False)
    workdir.add_argument("--workdir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    add = lambda name, **kw: commands.add_parser(name, parents=[workdir], **kw)  # noqa: E731

    up = add("up", help="start control plane and node agent, detached")
    up.add_argument("--gpu", type=int, default=0, help="nvidia.com/gpu capacity of each node")
    up.add_argument("--cpu", default=DEFAULT_CAPACITY["cpu"], help="cpu capacity of each node")
    up.add_argument("--memory", default=DEFAULT_CAPACITY["memory"], help="memory capacity of each node")
    up.add_argument("--node", action="append", default=[], help="node name (repeat for several nodes)")
    up.add_argument("--label", action="append", default=[], help="KEY=VALUE label for every node")
    up.add_argument("--runnable-image-prefix", action="append", default=[],
                    help=f"images the agent runs as processes (default {' '.join(DEFAULT_RUNNABLE)})")
    up.add_argument("--skip-image-prefix", action="append", default=[],
                    help="images the agent leaves Pending (benchmark mode)")
    up.add_argument("--host-env", action="append", default=[], help="host env var copied into every container")
    up.add_argument("--network", choices=NETWORK_MODES, default=None,
                    help="real: pods in network namespaces with CNI, kube-proxy and CoreDNS; loopback: pods on "
                         "127.X addresses of the host's namespace; auto (default, or $LOCALCLUSTER_NETWORK): "
                         "real where the host allows it")
    up.add_argument("--timeout", type=float, default=180.0)
    up.set_defaults(func=cmd_up)

    add("down", help="stop everything by recorded pid").set_defaults(func=cmd_down)
    add("env", help="print KUBECONFIG=... for eval").set_defaults(func=cmd_env)

    logs = add("logs", help="print a pod container's output")
    logs.add_argument("namespace")
    logs.add_argument("pod")
    logs.add_argument("container", nargs="?")
    logs.add_argument("-p", "--previous", action="store_true", help="the run before the current one")
    logs.set_defaults(func=cmd_logs)

    build_cmd = add("build", help="build the binaries into the cache")
    build_cmd.add_argument("--force", action="store_true")
    build_cmd.add_argument("--network", action="store_true", help="also the pod network's (CNI plugins, "
                           "CoreDNS, kube-router)")
    build_cmd.add_argument("--vllm", action="store_true", help="also the vLLM environment that runs the "
                           "vllm/vllm-openai image on the local node (vLLM's CPU build, about 6 GB)")
    build_cmd.set_defaults(func=cmd_build)
    add("gomod", help="regenerate tools/gomod from versions.py").set_defaults(func=cmd_gomod)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, RuntimeError, TimeoutError, LookupError) as err:
        print(f"localcluster {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
