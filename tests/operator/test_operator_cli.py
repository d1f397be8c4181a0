"""codex-operator's flags and environment become kopf.run's options and one frozen config."""

from __future__ import annotations

import dataclasses

import pytest

from codex_api import images
from codex_operator.config import OperatorConfig, Resources, parse_runtime_images
from codex_operator.main import operator_config, parser, run_options

DEFAULT_RUN = {"clusterwide": True, "namespaces": [], "standalone": True, "peering_name": None, "priority": 0,
               "liveness_endpoint": "http://0.0.0.0:8080/healthz"}
CASES = [
    ("defaults", [], {}, {}),
    ("namespaces", ["-n", "a", "--namespace", "b"], {}, {"clusterwide": False, "namespaces": ["a", "b"]}),
    ("namespaces-from-env", [], {"CODEX_NAMESPACES": "x, y"}, {"clusterwide": False, "namespaces": ["x", "y"]}),
    ("all-namespaces-wins-over-env", ["-A"], {"CODEX_NAMESPACES": "x"}, {}),
    ("peering", ["--peering", "codex", "--priority", "10"], {},
     {"standalone": False, "peering_name": "codex", "priority": 10}),
    ("peering-from-env", [], {"CODEX_PEERING": "codex"}, {"standalone": False, "peering_name": "codex"}),
    ("standalone-wins", ["--standalone"], {"CODEX_PEERING": "codex"}, {}),
    ("pod-ip-liveness", ["--liveness-port", "9000"], {"POD_IP": "10.1.2.3"},
     {"liveness_endpoint": "http://10.1.2.3:9000/healthz"}),
    ("no-liveness", ["--liveness-port", "0"], {}, {"liveness_endpoint": None}),
]


@pytest.mark.parametrize("argv,environ,changes", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kopf_run_options(argv, environ, changes):
    assert run_options(parser(environ).parse_args(argv), environ) == {**DEFAULT_RUN, **changes}


def test_namespace_and_all_namespaces_exclude_each_other():
    with pytest.raises(SystemExit):
        parser({}).parse_args(["-n", "a", "-A"])


def config_of(argv: list[str], environ: dict[str, str]) -> OperatorConfig:
    return operator_config(parser(environ).parse_args(argv), environ)


def test_config_is_read_once_from_flags_and_environment():
    environ = {"CODEX_TRAINER_IMAGE": "t:1", "CODEX_DEFAULT_TRAINER_MEMORY": "8Gi", "CODEX_METRICS_PORT": "9100",
               "POD_IP": "10.0.0.7", "CODEX_RUNTIME_IMAGES": "vllm=v:1, builtin=s:1", "HOSTNAME": "op-0"}
    cfg = config_of(["--runtime-image", "vllm=v:2"], environ)
    assert (cfg.trainer_image, dict(cfg.runtime_images), cfg.trainer_resources, cfg.metrics_port, cfg.bind_host,
            cfg.instance) == ("t:1", {"vllm": "v:2", "builtin": "s:1"}, Resources(None, "8Gi"), 9100, "10.0.0.7",
                              "op-0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.trainer_image = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.runtime_images["vllm"] = "changed"  # type: ignore[index]


def test_flags_win_over_the_environment():
    cfg = config_of(["--trainer-image", "flag:1", "--metrics-port", "9200"],
                    {"CODEX_TRAINER_IMAGE": "env:1", "CODEX_METRICS_PORT": "9100"})
    assert (cfg.trainer_image, cfg.metrics_port) == ("flag:1", 9200)


def test_defaults_come_from_the_api_package():
    cfg = config_of([], {})
    assert cfg.trainer_image == images.DEV_TRAINER_IMAGE == OperatorConfig().trainer_image
    assert cfg.runtime_image("builtin") == images.DEV_TRAINER_IMAGE  # codex-serve ships in the trainer image


@pytest.mark.parametrize("text", ["vllm", "=img", "vllm=", "a=b,c"], ids=["no-equals", "no-name", "no-image", "second"])
def test_a_malformed_runtime_image_is_refused(text):
    with pytest.raises(ValueError, match="expected NAME=IMAGE"):
        parse_runtime_images(text)


def test_a_malformed_runtime_image_flag_exits_with_its_value(capsys):
    from codex_operator.main import main

    with pytest.raises(SystemExit):
        main(["--runtime-image", "vllm"])
    assert "'vllm': expected NAME=IMAGE" in capsys.readouterr().err
