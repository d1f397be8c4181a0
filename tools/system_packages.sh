#!/usr/bin/env bash
# The Debian packages the embedded cluster's real pod network needs, installed when missing:
#   iproute2 (ip: network namespaces, veths, bridges, routes), nftables (nft: kube-proxy's nftables
#   mode), iptables and ipset (kube-router's NetworkPolicy firewall, and kube-proxy's iptables mode),
#   conntrack (kube-proxy clears stale UDP entries with it), openssl (the cluster's certificates).
# Only apt-get is used, and only as root; elsewhere this says what is missing and leaves it to you
# (the cluster then runs on its loopback network, or `make test` fails naming the reason).
set -euo pipefail
declare -A PACKAGE=([ip]=iproute2 [nft]=nftables [iptables]=iptables [ipset]=ipset [conntrack]=conntrack
                    [openssl]=openssl)
missing=()
for command in "${!PACKAGE[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 || missing+=("${PACKAGE[$command]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system packages missing for the real pod network: ${missing[*]} (install them as root)" >&2
  exit 0
fi
echo "installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
