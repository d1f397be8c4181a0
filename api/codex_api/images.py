"""The images every part of the project defaults to, declared once.

The operator's configuration, the generated manifests, the Helm values and the demo all read
these names; a test keeps the committed Helm values and manifests in step with them.
"""

from __future__ import annotations

# Where the project publishes its images, and the version the manifests of this tree install.
REGISTRY = "ghcr.io/codex-operator"
VERSION = "0.1.0"
OPERATOR_IMAGE = f"{REGISTRY}/codex-operator:{VERSION}"
TRAINER_IMAGE = f"{REGISTRY}/codex-trainer:{VERSION}"
SERVE_IMAGE = f"{REGISTRY}/codex-serve:{VERSION}"
# What the operator runs when nothing configures it: the image `make demo` and the tests build
# locally (codex-serve ships in the trainer image, so the builtin runtime uses it too).
DEV_TRAINER_IMAGE = "codex-trainer:dev"
# The vLLM OpenAI-compatible server (runtime: vllm).
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
# The runtime images an install (Helm's runtimes values, manifests/base) sets by name: the
# published codex-serve image for builtin, and vLLM's. A runtime not named here runs its
# catalogue default (codex_api.runtimes); an install may name any runtime.
INSTALL_RUNTIME_IMAGES = {"builtin": SERVE_IMAGE, "vllm": VLLM_IMAGE}
