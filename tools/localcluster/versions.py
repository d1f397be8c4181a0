"""Pinned versions of every binary the local cluster builds.

One place: the wrapper go.mod files under ``tools/gomod/`` are generated from
these values (``python -m localcluster gomod``) and the cache directory is
keyed by them, so bumping a version here rebuilds exactly what changed.
"""

from __future__ import annotations

KUBERNETES_VERSION = "v1.34.4"
# The staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as v0.<minor>.<patch>.
STAGING_VERSION = "v0." + KUBERNETES_VERSION[3:]
# The etcd server that k8s.io/kubernetes v1.34.4 pins in its own go.mod.
ETCD_VERSION = "v3.6.4"
HELM_VERSION = "v3.21.4"
KUBE_LINTER_VERSION = "v0.8.3"
