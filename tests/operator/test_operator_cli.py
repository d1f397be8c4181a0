"""codex-operator's flags and environment become the right `kopf run` command line and config."""

from __future__ import annotations

import pytest

from codex_operator.config import OperatorConfig, Resources
from codex_operator.main import kopf_args, parser

CASES = [
    ("defaults", [], {}, ["--all-namespaces", "--standalone", "--liveness=http://0.0.0.0:8080/healthz"]),
    ("namespaces", ["-n", "a", "--namespace", "b"], {}, ["--namespace", "a", "--namespace", "b", "--standalone"]),
    ("namespaces-from-env", [], {"CODEX_NAMESPACES": "x, y"}, ["--namespace", "x", "--namespace", "y"]),
    ("peering", ["--peering", "codex", "--priority", "10"], {}, ["--peering", "codex", "--priority", "10"]),
    ("pod-ip-liveness", ["--liveness-port", "9000"], {"POD_IP": "10.1.2.3"}, ["--liveness=http://10.1.2.3:9000/healthz"]),
    ("no-liveness", ["--liveness-port", "0", "--log-format", "plain"], {}, ["--log-format=plain"]),
]


@pytest.mark.parametrize("argv,environ,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kopf_command_line(argv, environ, expected, monkeypatch):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    out = kopf_args(parser().parse_args(argv), environ)
    assert out[:3] == ["run", "--module", "codex_operator.handlers"]
    joined = " ".join(out)
    assert " ".join(expected) in joined
    if "--peering" not in argv:
        assert "--standalone" in out
    if argv[-2:] == ["--log-format", "plain"]:
        assert not any(a.startswith("--liveness") for a in out)
    else:
        assert "--log-format=json" in out


def test_namespace_and_all_namespaces_exclude_each_other():
    with pytest.raises(SystemExit):
        parser().parse_args(["-n", "a", "-A"])


def test_config_is_read_once_from_env():
    cfg = OperatorConfig.from_env({"CODEX_TRAINER_IMAGE": "t:1", "CODEX_DEFAULT_TRAINER_MEMORY": "8Gi",
                                   "CODEX_METRICS_PORT": "9100", "POD_IP": "10.0.0.7"})
    assert (cfg.trainer_image, cfg.serve_image, cfg.trainer_resources, cfg.metrics_port, cfg.bind_host) == (
        "t:1", "t:1", Resources(None, "8Gi"), 9100, "10.0.0.7")
    with pytest.raises(Exception):
        cfg.trainer_image = "other"  # frozen
