"""A pod's /etc/resolv.conf and /etc/hosts, written as kubelet writes them.

resolv.conf follows the pod's ``dnsPolicy`` (ClusterFirst by default: the cluster's DNS Service,
the namespace's search domains and ``ndots:5``; Default: the node's own resolv.conf; None: only
``dnsConfig``), then merges ``dnsConfig`` (nameservers and searches appended, options by name).
hosts has localhost, the pod's own address under its hostname (and its FQDN when the pod names a
``subdomain``: what a headless Service's per-pod names resolve to inside the pod), then
``hostAliases``. Both are pure: the agent writes them into the pod's directory and binds them
over the container's /etc files.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

CLUSTER_DOMAIN = "cluster.local"
NDOTS = "5"
# kubelet caps these (validation refuses more in dnsConfig; the node's own are cut).
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32

HOSTS_HEADER = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def _parse_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, options) of a resolv.conf."""
    servers, searches, options = [], [], []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, searches, options


def _merge_options(base: list[str], extra: list[Mapping[str, Any]]) -> list[str]:
    """Options by name, ``dnsConfig``'s winning (``ndots:5`` then ``ndots:2`` is ``ndots:2``)."""
    merged: dict[str, str] = {}
    for option in base:
        merged[option.partition(":")[0]] = option
    for option in extra:
        name, value = option["name"], option.get("value")
        merged[name] = f"{name}:{value}" if value is not None else name
    return list(merged.values())


def resolv_conf(pod: Mapping[str, Any], dns_ip: Optional[str], node_resolv: str,
                cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The pod's /etc/resolv.conf. ``dns_ip`` is the cluster DNS Service's address (None: no cluster
    DNS, so ClusterFirst falls back to the node's, as kubelet does without --cluster-dns)."""
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # ClusterFirst on the host's network is Default; ClusterFirstWithHostNet is not
    if policy == "ClusterFirstWithHostNet":
        policy = "ClusterFirst"
    if policy == "ClusterFirst" and dns_ip is None:
        policy = "Default"
    servers, searches, options = [], [], []
    if policy == "ClusterFirst":
        servers = [dns_ip]
        node_searches = _parse_resolv(node_resolv)[1]
        searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain, *node_searches]
        options = [f"ndots:{NDOTS}"]
    elif policy == "Default":
        servers, searches, options = _parse_resolv(node_resolv)
    config = spec.get("dnsConfig") or {}
    servers = [*servers, *(config.get("nameservers") or [])][:MAX_NAMESERVERS]
    searches = list(dict.fromkeys([*searches, *(config.get("searches") or [])]))[:MAX_SEARCHES]
    options = _merge_options(options, config.get("options") or [])
    lines = [f"nameserver {server}" for server in servers]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """The pod's hostname as kubelet sets it: spec.hostname (an Indexed Job's pods get ``<job>-<index>``),
    else the pod's name, cut to 63 characters."""
    return ((pod.get("spec") or {}).get("hostname") or (pod.get("metadata") or {}).get("name") or "")[:63]


def hosts_file(pod: Mapping[str, Any], pod_ip: str, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The pod's /etc/hosts: localhost, its own name(s) at ``pod_ip``, then its hostAliases."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    hostname = pod_hostname(pod)
    names = [hostname]
    if spec.get("subdomain"):
        names.insert(0, f"{hostname}.{spec['subdomain']}.{meta.get('namespace') or 'default'}.svc.{cluster_domain}")
    text = HOSTS_HEADER + f"{pod_ip}\t" + "\t".join(names) + "\n"
    aliases = spec.get("hostAliases") or []
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        text += "".join(f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) + "\n" for a in aliases)
    return text
