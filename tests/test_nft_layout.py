"""The nftables layout rule for rule, as ``nft list table`` prints it: the twin of the iptables-save
layout tests (tests/test_portmap_rules.py, test_firewall.py). Fixed network and container names, so
every chain name is what an operator sees on a node."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import EXTERNAL_NET, EXTERNAL_NET6, Node, node_env

pytestmark = pytest.mark.root

PORTMAP_V4 = """\
table ip cni_hostport {
	comment "pycni portmap plugin"
	map hostip_hostports {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 198.51.100.1 . tcp . 8443 : goto hostport-198.51.100.1-tcp-8443 }
	}

	map hostports {
		type inet_proto . inet_service : verdict
		elements = { tcp . 8080 : goto hostport-tcp-8080,
			     tcp . 9191 : goto hostport-tcp-9191,
			     udp . 5353 : goto hostport-udp-5353 }
	}

	set hairpins_16 {
		type ipv4_addr . ipv4_addr
		elements = { 10.88.0.0 . 10.88.0.6 }
	}

	set hairpins_32 {
		type ipv4_addr . ipv4_addr
		elements = { 127.0.0.1 . 10.88.0.6 }
	}

	chain hostports_all {
		jump hostip_hostports
		jump hostports
	}

	chain hostip_hostports {
		ip daddr . meta l4proto . th dport vmap @hostip_hostports
	}

	chain hostports {
		meta l4proto . th dport vmap @hostports
	}

	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump hostports_all
	}

	chain output {
		type nat hook output priority -100; policy accept;
		fib daddr type local jump hostports_all
	}

	chain masquerading {
		type nat hook postrouting priority srcnat; policy accept;
		ct status dnat ip saddr & 255.255.0.0 . ip daddr @hairpins_16 masquerade
		ct status dnat ip saddr . ip daddr @hairpins_32 masquerade
	}

	chain dn-e30d516c8208bc6dd27ee {
		tcp dport 8080 dnat to 10.88.0.6:80
		tcp dport 8443 ip daddr 198.51.100.1 dnat to 10.88.0.6:443
		udp dport 5353 dnat to 10.88.0.6:53
		tcp dport 9191 dnat to 10.88.0.6:91
	}

	chain hostport-tcp-8080 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}

	chain hostport-198.51.100.1-tcp-8443 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}

	chain hostport-udp-5353 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}

	chain hostport-tcp-9191 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}
}
"""
PORTMAP_V6 = """\
table ip6 cni_hostport {
	comment "pycni portmap plugin"
	map hostip_hostports {
		type ipv6_addr . inet_proto . inet_service : verdict
		elements = { 2001:db8:51::1 . tcp . 9090 : goto hostport-2001-db8-51--1-tcp-9090 }
	}

	map hostports {
		type inet_proto . inet_service : verdict
		elements = { tcp . 8080 : goto hostport-tcp-8080,
			     udp . 5353 : goto hostport-udp-5353 }
	}

	set hairpins_64 {
		type ipv6_addr . ipv6_addr
		elements = { fd00:88:: . fd00:88::2 }
	}

	chain hostports_all {
		jump hostip_hostports
		jump hostports
	}

	chain hostip_hostports {
		ip6 daddr . meta l4proto . th dport vmap @hostip_hostports
	}

	chain hostports {
		meta l4proto . th dport vmap @hostports
	}

	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local jump hostports_all
	}

	chain output {
		type nat hook output priority -100; policy accept;
		fib daddr type local jump hostports_all
	}

	chain masquerading {
		type nat hook postrouting priority srcnat; policy accept;
		ct status dnat ip6 saddr & ffff:ffff:ffff:ffff:: . ip6 daddr @hairpins_64 masquerade
	}

	chain dn-e30d516c8208bc6dd27ee {
		tcp dport 8080 dnat to [fd00:88::2]:80
		udp dport 5353 dnat to [fd00:88::2]:53
		tcp dport 9090 ip6 daddr 2001:db8:51::1 dnat to [fd00:88::2]:90
	}

	chain hostport-tcp-8080 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}

	chain hostport-udp-5353 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}

	chain hostport-2001-db8-51--1-tcp-9090 {
		jump dn-e30d516c8208bc6dd27ee comment "dnat name: refnet id: ctr1"
	}
}
"""
MASQUERADE = """\
table inet cni_plugins_masquerade {
	comment "pycni ipMasq"
	set masq_ipv4 {
		type ipv4_addr
		elements = { 10.88.0.6 }
	}

	set masq_ipv6 {
		type ipv6_addr
		elements = { fd00:88::2 }
	}

	set local_ipv4_16 {
		type ipv4_addr . ipv4_addr
		elements = { 10.88.0.6 . 10.88.0.0 }
	}

	set local_ipv6_64 {
		type ipv6_addr . ipv6_addr
		elements = { fd00:88::2 . fd00:88:: }
	}

	chain local_checks {
		ip saddr . ip daddr & 255.255.0.0 @local_ipv4_16 accept
		ip6 saddr . ip6 daddr & ffff:ffff:ffff:ffff:: @local_ipv6_64 accept
	}

	chain masq_checks {
		ip saddr @masq_ipv4 masquerade
		ip6 saddr @masq_ipv6 masquerade
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr 224.0.0.0/4 return
		ip6 daddr ff00::/8 return
		jump local_checks
		goto masq_checks
	}
}
"""


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("nl") as n:
        yield n


def listing(node: Node, family: str, name: str) -> str:
    return node.exec("nft", "list", "table", family, name).stdout.decode()


def add_dual_stack_container(node: Node) -> dict[str, Any]:
    """The reference's dual-stack example (reference.md §2.4), on nftables."""
    bridge = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
              "ipMasq": True, "ipMasqBackend": "nftables", "hairpinMode": True, "stateDir": node.state_dir,
              "ipam": {"type": "host-local", "dataDir": node.data_dir,
                       "ranges": [[{"subnet": "10.88.0.0/16", "rangeStart": "10.88.0.6"}], [{"subnet": "fd00:88::/64"}]],
                       "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}}
    ctr = node.container("c1")
    result, rc, err = node.run_plugin("bridge", "ADD", bridge, ctr, container_id="ctr1")
    assert rc == 0 and result is not None, err
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": f"{EXTERNAL_NET}.1"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
                {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": f"{EXTERNAL_NET6}1"},
                {"hostPort": 9191, "containerPort": 91, "protocol": "tcp", "hostIP": "0.0.0.0"}]
    portmap = {"cniVersion": "1.0.0", "name": "refnet", "type": "portmap", "backend": "nftables",
               "stateDir": node.state_dir, "runtimeConfig": {"portMappings": mappings}, "prevResult": result}
    out, rc, err = node.run_plugin("portmap", "ADD", portmap, ctr, container_id="ctr1")
    assert rc == 0, (out, err)
    return result


def test_portmap_and_ipmasq_tables_rule_for_rule(node: Node) -> None:
    result = add_dual_stack_container(node)
    assert [ip["address"] for ip in result["ips"]] == ["10.88.0.6/16", "fd00:88::2/64"]
    assert listing(node, "ip", "cni_hostport") == PORTMAP_V4
    assert listing(node, "ip6", "cni_hostport") == PORTMAP_V6
    assert listing(node, "inet", "cni_plugins_masquerade") == MASQUERADE
