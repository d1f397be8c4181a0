#!/usr/bin/env bash
# `make e2e-kind`: the whole flow on a kind cluster with the real images.
# Requires a Docker engine, kind, kubectl and helm on PATH; it cannot run on machines
# without Docker (use `make demo`, which runs the same flow on the embedded cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-codex-e2e}
TAG=${TAG:-e2e}
NAMESPACE=${NAMESPACE:-codex-system}
MODEL=${MODEL:-tiny-llama}   # or smollm2-135m-instruct

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || { echo "e2e-kind needs '$tool' on PATH" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "e2e-kind needs a running Docker engine" >&2; exit 2; }

cleanup() {
  [ -n "${PORT_FORWARD:-}" ] && kill "$PORT_FORWARD" 2>/dev/null || true
  [ "${KEEP_CLUSTER:-0}" = 1 ] || kind delete cluster --name "$CLUSTER"
}
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --wait 120s
docker build -f Dockerfile.operator -t "codex-operator:$TAG" .
docker build -f Dockerfile.trainer --target trainer -t "codex-trainer:$TAG" .
docker build -f Dockerfile.trainer --target serve -t "codex-serve:$TAG" .
for image in codex-operator codex-trainer codex-serve; do
  kind load docker-image --name "$CLUSTER" "$image:$TAG"
done

kubectl create namespace "$NAMESPACE"
kubectl label namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted
helm install codex-operator helm/codex-operator --namespace "$NAMESPACE" --wait --timeout 5m \
  --set image.repository=codex-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set trainer.image="codex-trainer:$TAG" --set runtimes.builtin.image="codex-serve:$TAG"

# The demo run on CPU with the chosen embedded model.
sed "s/embedded: smollm2-135m-instruct/embedded: $MODEL/" examples/run.yaml | kubectl apply -f -
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded cxrun/codex-demo --timeout=30m
kubectl get cxrun codex-demo

kubectl apply -f examples/model.yaml
kubectl wait --for=condition=Available cxmodel/codex-demo --timeout=15m
kubectl get cxmodel codex-demo

kubectl port-forward svc/codex-demo 18000:8000 >/dev/null 2>&1 &
PORT_FORWARD=$!
sleep 3
curl -sf http://127.0.0.1:18000/v1/completions -H 'Content-Type: application/json' \
  -d '{"model": "codex-demo", "prompt": "def add(a, b):\n", "max_tokens": 32, "temperature": 0}'
echo
echo "e2e-kind: passed"
