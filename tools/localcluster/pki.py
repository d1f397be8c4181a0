"""Certificates and keys for one local cluster, made with the openssl CLI.

Everything is ECDSA P-256 (fast to generate, accepted by every component):

- ``ca.crt``/``ca.key``: the cluster CA. It signs the serving certificates, is
  the apiserver's ``--client-ca-file`` and the ``--root-ca-file`` that
  kube-controller-manager publishes as the ``kube-root-ca.crt`` ConfigMap (so
  pods find it at /var/run/secrets/kubernetes.io/serviceaccount/ca.crt).
- ``apiserver.crt``: serving certificate for 127.0.0.1, the addresses the cluster's network gives
  the apiserver (its address on the underlay and the ``kubernetes`` Service ClusterIP) and the
  ``kubernetes.default.svc`` names.
- ``kubelet.crt``: serving certificate of the node agent's kubelet API (logs), for loopback and
  every node's address.
- ``kubelet-client.crt``: the client certificate the apiserver presents to it.
- ``sa.key``/``sa.pub``: ServiceAccount token signing key pair.
- ``tokens.csv``: the static admin bearer token (group ``system:masters``).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

API_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = @alt
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[alt]
{alt_names}
"""


@dataclass(frozen=True)
class Pki:
    """Paths of every credential file in a cluster's ``pki/`` directory."""

    root: Path

    ca_crt = property(lambda self: self.root / "ca.crt")
    ca_key = property(lambda self: self.root / "ca.key")
    apiserver_crt = property(lambda self: self.root / "apiserver.crt")
    apiserver_key = property(lambda self: self.root / "apiserver.key")
    kubelet_crt = property(lambda self: self.root / "kubelet.crt")
    kubelet_key = property(lambda self: self.root / "kubelet.key")
    kubelet_client_crt = property(lambda self: self.root / "kubelet-client.crt")
    kubelet_client_key = property(lambda self: self.root / "kubelet-client.key")
    sa_key = property(lambda self: self.root / "sa.key")
    sa_pub = property(lambda self: self.root / "sa.pub")
    tokens_csv = property(lambda self: self.root / "tokens.csv")

    @property
    def admin_token(self) -> str:
        return self.tokens_csv.read_text().split(",", 1)[0]


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _ec_key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path.name, cwd=path.parent)
    path.chmod(0o600)


def _write_config(root: Path, name: str, ips: tuple[str, ...], dns: tuple[str, ...]) -> Path:
    lines = [f"IP.{i} = {ip}" for i, ip in enumerate(ips, 1)] + [f"DNS.{i} = {d}" for i, d in enumerate(dns, 1)]
    config = root / f"{name}.cnf"
    config.write_text(_OPENSSL_CONFIG.format(alt_names="\n".join(lines) or "DNS.1 = localhost"))
    return config


def _signed_cert(root: Path, name: str, subject: str, extension: str, ips=(), dns=()) -> None:
    config = _write_config(root, name, tuple(ips), tuple(dns))
    _ec_key(root / f"{name}.key")
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-config", config.name,
             "-out", f"{name}.csr", cwd=root)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-set_serial", str(secrets.randbits(63)), "-days", "365", "-extfile", config.name,
             "-extensions", extension, "-out", f"{name}.crt", cwd=root)
    (root / f"{name}.csr").unlink()
    config.unlink()


def create(root: Path, api_ips: tuple[str, ...] = (), node_ips: tuple[str, ...] = ()) -> Pki:
    """Generate a fresh CA, certificates, ServiceAccount keys and admin token under ``root``; the
    apiserver's certificate also names ``api_ips``, the kubelet's ``node_ips``."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    config = _write_config(root, "ca", (), ())
    _ec_key(root / "ca.key")
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=codex-localcluster-ca", "-config",
             config.name, "-extensions", "ca_ext", "-days", "3650", "-out", "ca.crt", cwd=root)
    config.unlink()
    _signed_cert(root, "apiserver", "/CN=kube-apiserver", "server_ext",
                 ips=tuple(dict.fromkeys(("127.0.0.1", *api_ips))), dns=API_DNS_NAMES)
    _signed_cert(root, "kubelet", "/CN=localcluster-kubelet", "server_ext",
                 ips=tuple(dict.fromkeys(("127.0.0.1", *node_ips))), dns=("localhost",))
    _signed_cert(root, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "client_ext")
    _ec_key(root / "sa.key")
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=root)
    token = secrets.token_hex(24)
    (root / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    (root / "tokens.csv").chmod(0o600)
    return Pki(root)
