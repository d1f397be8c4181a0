"""A pod's resolv.conf and hosts, as kubelet writes them (pure: no cluster needed)."""

from __future__ import annotations

import pytest

from localcluster.agent.dnsfiles import hosts_file, resolv_conf

NODE_RESOLV = "# the node's\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"


def pod(**spec):
    return {"metadata": {"name": "trainer-0", "namespace": "team-a"}, "spec": spec}


CASES = [
    ("cluster-first", pod(), "100.64.64.10",
     "nameserver 100.64.64.10\nsearch team-a.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
     "options ndots:5\n"),
    ("default", pod(dnsPolicy="Default"), "100.64.64.10",
     "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
    ("host-network-cluster-first-is-default", pod(hostNetwork=True), "100.64.64.10",
     "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
    ("cluster-first-with-host-net", pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), "100.64.64.10",
     "nameserver 100.64.64.10\nsearch team-a.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
     "options ndots:5\n"),
    ("none-with-config", pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.2.3.4"], "searches": ["a.b"],
                                                           "options": [{"name": "ndots", "value": "2"}]}),
     "100.64.64.10", "nameserver 1.2.3.4\nsearch a.b\noptions ndots:2\n"),
    ("config-merged-into-cluster-first", pod(dnsConfig={"options": [{"name": "ndots", "value": "1"},
                                                                    {"name": "single-request"}]}),
     "100.64.64.10",
     "nameserver 100.64.64.10\nsearch team-a.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
     "options ndots:1 single-request\n"),
    ("no-cluster-dns", pod(), None, "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n"),
]


@pytest.mark.parametrize(("obj", "dns_ip", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolv_conf_follows_the_dns_policy(obj, dns_ip, expected):
    assert resolv_conf(obj, dns_ip, NODE_RESOLV) == expected


def test_hosts_names_the_pod_and_its_headless_service_fqdn():
    text = hosts_file(pod(hostname="trainer-0", subdomain="run-workers",
                          hostAliases=[{"ip": "100.64.0.1", "hostnames": ["control-plane"]}]), "100.64.128.7")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "100.64.128.7\ttrainer-0.run-workers.team-a.svc.cluster.local\ttrainer-0\n" in text
    assert text.endswith("# Entries added by HostAliases.\n100.64.0.1\tcontrol-plane\n")
    assert "100.64.128.9\ttrainer-0\n" in hosts_file(pod(), "100.64.128.9")
