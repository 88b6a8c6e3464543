"""portmap behind bridge, as real executables in a node namespace, proven with real traffic."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import EXTERNAL_NET, EXTERNAL_NET6, Node, node_env, ns_exec, request, server

pytestmark = pytest.mark.root

NODE_V4 = f"{EXTERNAL_NET}.1"
NODE_V6 = f"{EXTERNAL_NET6}1"
EXT_V6 = f"{EXTERNAL_NET6}2"
BRIDGE_V4 = "10.88.0.1"


class Chain:
    """bridge then portmap, the way libcni runs a conflist (DEL in reverse, final result as prevResult)."""

    def __init__(self, node: Node, dual: bool = False, v6_only: bool = False, **portmap_extra: Any) -> None:
        self.node = node
        self.backend = getattr(node, "backend", "iptables")
        ranges = [[{"subnet": "10.88.0.0/16"}]]
        routes = [{"dst": "0.0.0.0/0"}]
        if dual or v6_only:
            ranges = ([] if v6_only else ranges) + [[{"subnet": "fd00:88::/64"}]]
            routes = ([] if v6_only else routes) + [{"dst": "::/0"}]
        self.bridge = {"cniVersion": "1.0.0", "name": "pmnet", "type": "bridge", "bridge": "cni0",
                       "isGateway": True, "ipMasq": True, "hairpinMode": True, "stateDir": node.state_dir,
                       "ipMasqBackend": self.backend,
                       "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": ranges, "routes": routes}}
        self.portmap = {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "backend": self.backend,
                        "capabilities": {"portMappings": True}, "stateDir": node.state_dir, **portmap_extra}
        self.results: dict[str, dict[str, Any]] = {}

    def portmap_conf(self, ctr: str, mappings: list[dict[str, Any]] | None, prev: bool = True) -> dict[str, Any]:
        conf = dict(self.portmap)
        if mappings is not None:
            conf["runtimeConfig"] = {"portMappings": mappings}
        if prev and ctr in self.results:
            conf["prevResult"] = self.results[ctr]
        return conf

    def add(self, ctr: str, mappings: list[dict[str, Any]]) -> dict[str, Any]:
        out, rc, err = self.node.run_plugin("bridge", "ADD", self.bridge, ctr)
        assert rc == 0, (out, err)
        assert out is not None
        self.results[ctr] = out
        final, rc, err = self.node.run_plugin("portmap", "ADD", self.portmap_conf(ctr, mappings), ctr)
        assert rc == 0, (final, err)
        assert final == out  # portmap passes the result through
        return out

    def check(self, ctr: str, mappings: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, int]:
        out, rc, _ = self.node.run_plugin("portmap", "CHECK", self.portmap_conf(ctr, mappings), ctr)
        return out, rc

    def delete(self, ctr: str, mappings: list[dict[str, Any]] | None, prev: bool = True,
               env_extra: dict[str, str] | None = None) -> None:
        for plugin, conf in (("portmap", self.portmap_conf(ctr, mappings, prev)), ("bridge", self.bridge)):
            if prev and ctr in self.results and plugin == "bridge":
                conf = dict(conf, prevResult=self.results[ctr])
            out, rc, err = self.node.run_plugin(plugin, "DEL", conf, ctr, env_extra=env_extra)
            assert rc == 0, (plugin, out, err)
            assert out is None

    @staticmethod
    def ip(result: dict[str, Any], family: int = 4) -> str:
        for entry in result["ips"]:
            addr = entry["address"].split("/")[0]
            if (":" in addr) == (family == 6):
                return addr
        raise AssertionError(f"no IPv{family} address in {result}")


def touch_tables(node: Node) -> None:
    """Load nat and filter in both families, as on any real node, so 'before' is comparable."""
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table in ("nat", "filter"):
            node.exec(tool, "-t", table, "-S")


def snapshot(node: Node) -> dict[str, Any]:
    # The bridge stays after its last container, like the reference's (it may carry node config).
    return {"v4": node.save(4), "v6": node.save(6), "nft": node.nft_ruleset(),
            "links": [l for l in node.links() if l != "cni0"],
            "reservations": node.reservations("pmnet"),
            "records": sorted(os.path.join(d, f) for d, _, fs in os.walk(node.state_dir) for f in fs)}


@pytest.fixture(params=["iptables", "nftables"])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("pm") as n:
        touch_tables(n)
        n.backend = request.param
        yield n


def rules(node: Node, family: int = 4) -> str:
    """The rules of the node's backend: iptables-save text, or nft's listing of our tables."""
    if node.backend == "iptables":
        return node.save(family)
    return node.nft_ruleset()


def nat_text(node: Node, family: int = 4) -> str:
    return rules(node, family)


def tcp(port: int, cport: int = 80, **kw: Any) -> dict[str, Any]:
    return {"hostPort": port, "containerPort": cport, "protocol": "tcp", **kw}


def test_tcp_and_udp_from_everywhere_then_del_restores_the_tables(node: Node) -> None:
    chain = Chain(node)
    before = snapshot(node)
    c1, c2 = node.container("c1"), node.container("c2")
    mappings = [tcp(8080), {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    r1 = chain.add(c1, mappings)
    r2 = chain.add(c2, [tcp(8081)])
    ip1, ip2 = chain.ip(r1), chain.ip(r2)
    with server(c1, "tcp", 80, tag="c1"), server(c1, "udp", 53, tag="c1u"):
        assert request(node.external, "tcp", NODE_V4, 8080) == f"c1 {EXTERNAL_NET}.2"
        assert request(node.external, "udp", NODE_V4, 5353) == f"c1u {EXTERNAL_NET}.2"
        assert request(node.ns, "tcp", NODE_V4, 8080) == f"c1 {NODE_V4}"
        assert request(node.ns, "tcp", "127.0.0.1", 8080) == f"c1 {BRIDGE_V4}"  # localhost is masqueraded
        assert request(node.ns, "udp", "127.0.0.1", 5353) == f"c1u {BRIDGE_V4}"
        # hairpin: the container through its own hostPort, and its neighbour; both masqueraded
        assert request(c1, "tcp", NODE_V4, 8080) == f"c1 {BRIDGE_V4}"
        assert request(c1, "tcp", BRIDGE_V4, 8080) == f"c1 {BRIDGE_V4}"
        assert request(c2, "tcp", NODE_V4, 8080) == f"c1 {BRIDGE_V4}"
    with server(c2, "tcp", 80, tag="c2"):
        assert request(node.external, "tcp", NODE_V4, 8081) == f"c2 {EXTERNAL_NET}.2"
    assert ip1 != ip2
    chain.delete(c1, mappings)
    assert "8080" not in rules(node) and "8081" in rules(node)
    chain.delete(c2, [tcp(8081)])
    assert snapshot(node) == before


def test_del_without_prev_result_or_mappings_and_after_netns_deleted(node: Node) -> None:
    chain = Chain(node)
    before = snapshot(node)
    c1, c2, c3 = node.container("c1"), node.container("c2"), node.container("c3")
    for i, ctr in enumerate((c1, c2, c3)):
        chain.add(ctr, [tcp(9000 + i)])
    chain.delete(c1, None, prev=False)  # neither prevResult nor portMappings (the reference leaks here)
    node.namespaces.remove(c2)
    chain.delete(c2, None, prev=False)  # after `ip netns del`
    chain.delete(c3, None, prev=False, env_extra={"CNI_NETNS": ""})
    assert snapshot(node) == before
    chain.delete(c3, None, prev=False)  # a repeated DEL is fine
    assert snapshot(node) == before


def test_re_add_replaces_rules_instead_of_stacking_them(node: Node) -> None:
    chain = Chain(node)
    c1 = node.container("c1")
    result = chain.add(c1, [tcp(8080)])
    conf = chain.portmap_conf(c1, [tcp(8080, 81)])
    out, rc, err = node.run_plugin("portmap", "ADD", conf, c1)
    assert rc == 0, err
    text = rules(node)
    if node.backend == "iptables":
        assert text.count("--dport 8080 -j DNAT") == 1 and f"{chain.ip(result)}:81" in text
        assert text.count("-j CNI-HOSTPORT-DNAT") == 2  # PREROUTING and OUTPUT, once each
    else:
        assert text.count("tcp dport 8080 dnat") == 1 and f"{chain.ip(result)}:81" in text
        assert text.count("jump dn-") == 1  # one claim of the port


def test_host_ip_restricted_mapping_answers_only_there(node: Node) -> None:
    chain = Chain(node)
    c1 = node.container("c1")
    node.exec("ip", "addr", "add", f"{EXTERNAL_NET}.11/24", "dev", "ext0")
    chain.add(c1, [tcp(8080, hostIP=f"{EXTERNAL_NET}.11")])
    with server(c1, "tcp", 80, tag="c1"), server(node.ns, "tcp", 8080, tag="node"):
        assert request(node.external, "tcp", f"{EXTERNAL_NET}.11", 8080) == f"c1 {EXTERNAL_NET}.2"
        assert request(node.external, "tcp", NODE_V4, 8080) == f"node {EXTERNAL_NET}.2"


def test_ipv6_and_dual_stack(node: Node) -> None:
    chain = Chain(node, dual=True)
    c1 = node.container("c1")
    mappings = [tcp(8080), {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]
    result = chain.add(c1, mappings)
    with server(c1, "tcp", 80, family=6, tag="c6"), server(c1, "tcp", 80, tag="c4"), \
            server(c1, "udp", 53, family=6, tag="u6"):
        assert request(node.external, "tcp", NODE_V6, 8080, timeout=5) == f"c6 {EXT_V6}"
        assert request(node.external, "tcp", NODE_V4, 8080) == f"c4 {EXTERNAL_NET}.2"
        assert request(node.external, "udp", NODE_V6, 5353, timeout=5) == f"u6 {EXT_V6}"
        assert request(c1, "tcp", NODE_V6, 8080, timeout=5) == "c6 fd00:88::1"  # hairpin over IPv6
    out, rc = chain.check(c1, mappings)
    assert rc == 0, out
    if node.backend == "iptables":
        v6 = node.save(6)
        assert f"--to-destination [{chain.ip(result, 6)}]:80" in v6 and "127.0.0.1" not in v6
    else:
        v6 = node.exec("nft", "list", "table", "ip6", "cni_hostport").stdout.decode()
        assert f"dnat to [{chain.ip(result, 6)}]:80" in v6 and "127.0.0.1" not in v6
    chain.delete(c1, None, prev=False)
    assert "CNI-" not in node.save(6) and "CNI-" not in node.save(4) and "cni_hostport" not in node.nft_ruleset()


@pytest.mark.parametrize("kind", ["v4", "v6", "dual"])
def test_check_passes_after_add_and_names_what_was_removed(node: Node, kind: str) -> None:
    chain = Chain(node, dual=kind == "dual", v6_only=kind == "v6")
    c1 = node.container("c1")
    mappings = [tcp(8080)]
    result = chain.add(c1, mappings)
    out, rc = chain.check(c1, mappings)
    assert rc == 0, out
    family = 6 if kind == "v6" else 4
    if node.backend == "nftables":
        check_names_what_was_removed_nft(node, chain, c1, mappings, result, family)
        return
    tool = "ip6tables-legacy" if family == 6 else "iptables-legacy"
    dn = [line for line in node.save(family).splitlines() if line.startswith("-A CNI-DN-") and "DNAT" in line][0]
    node.exec(tool, "-t", "nat", *dn.replace("-A ", "-D ", 1).split())
    out, rc = chain.check(c1, mappings)
    assert rc != 0 and out is not None
    assert f"could not check ipv{family} dnat" in out["msg"]
    assert f"--to-destination {'[' if family == 6 else ''}{chain.ip(result, family)}" in out["msg"]
    assert "missing from chain CNI-DN-" in out["msg"]
    # a removed jump is named precisely as well
    out, rc, err = node.run_plugin("portmap", "ADD", chain.portmap_conf(c1, mappings), c1)
    assert rc == 0, err
    node.exec(tool, "-t", "nat", "-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT")
    out, rc = chain.check(c1, mappings)
    assert rc != 0 and out is not None and "jump [-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT]" \
        in out["msg"]


def check_names_what_was_removed_nft(node: Node, chain: Chain, c1: str, mappings: list[dict[str, Any]],
                                     result: dict[str, Any], family: int) -> None:
    table = ["ip" if family == 4 else "ip6", "cni_hostport"]
    listing = node.exec("nft", "-a", "list", "table", *table).stdout.decode()
    dn_chain = re.search(r"chain (dn-[0-9a-f]+) \{", listing).group(1)
    handle = re.search(r"dnat to .*# handle (\d+)", listing).group(1)
    node.exec("nft", "delete", "rule", *table, dn_chain, "handle", handle)
    out, rc = chain.check(c1, mappings)
    assert rc != 0 and out is not None
    assert f"could not check ipv{family} dnat (nftables)" in out["msg"]
    ip = chain.ip(result, family)
    assert f"dnat {table[0]} to {'[' + ip + ']' if family == 6 else ip}:80] missing from chain {dn_chain}" in out["msg"]
    # a removed map element and a removed claim are named precisely as well
    out, rc, err = node.run_plugin("portmap", "ADD", chain.portmap_conf(c1, mappings), c1)
    assert rc == 0, err
    out, rc = chain.check(c1, mappings)
    assert rc == 0, out
    node.exec("nft", "delete", "element", *table, "hostports", "{ tcp . 8080 }")
    node.exec("nft", "flush", "chain", *table, "hostport-tcp-8080")
    out, rc = chain.check(c1, mappings)
    assert rc != 0 and out is not None
    assert "element { tcp . 8080 : goto hostport-tcp-8080 } missing from map hostports" in out["msg"]
    assert f"rule [jump {dn_chain}] missing from chain hostport-tcp-8080" in out["msg"]


def test_udp_host_port_reused_by_a_second_container(node: Node) -> None:
    chain = Chain(node)
    c1, c2 = node.container("c1"), node.container("c2")
    udp = [{"hostPort": 7001, "containerPort": 53, "protocol": "udp"}]
    chain.add(c1, udp)
    with server(c1, "udp", 53, tag="first"):
        assert request(node.external, "udp", NODE_V4, 7001).startswith("first")
    chain.delete(c1, udp)
    chain.add(c2, udp)
    with server(c2, "udp", 53, tag="second"):
        assert request(node.external, "udp", NODE_V4, 7001).startswith("second")


def test_sixteen_mappings_in_one_container(node: Node) -> None:
    chain = Chain(node)
    c1 = node.container("c1")
    mappings = [tcp(6000 + i, 7000 + i) for i in range(17)]
    chain.add(c1, mappings)
    if node.backend == "iptables":
        assert node.save(4).count("-m multiport --dports") == 2
    else:
        assert rules(node).count("dnat to") == 17
    for i in (0, 7, 15, 16):
        with server(c1, "tcp", 7000 + i, tag=f"p{i}"):
            assert request(node.external, "tcp", NODE_V4, 6000 + i) == f"p{i} {EXTERNAL_NET}.2"
    out, rc = chain.check(c1, mappings)
    assert rc == 0, out


def test_thirty_containers_with_distinct_host_ports(node: Node) -> None:
    chain = Chain(node)
    before = snapshot(node)
    ctrs = [node.container(f"m{i}") for i in range(30)]
    for i, ctr in enumerate(ctrs):
        chain.add(ctr, [tcp(10000 + i)])
    for i in (0, 13, 29):
        with server(ctrs[i], "tcp", 80, tag=f"m{i}"):
            assert request(node.external, "tcp", NODE_V4, 10000 + i) == f"m{i} {EXTERNAL_NET}.2"
    for ctr in ctrs:
        chain.delete(ctr, None, prev=False)
    assert snapshot(node) == before


def test_crash_mid_add_then_del_leaves_nothing(node: Node) -> None:
    chain = Chain(node)
    before = snapshot(node)
    c1 = node.container("c1")
    out, rc, err = node.run_plugin("bridge", "ADD", chain.bridge, c1)
    assert rc == 0, err
    chain.results[c1] = out
    _, rc, _ = node.run_plugin("portmap", "ADD", chain.portmap_conf(c1, [tcp(8080)]), c1,
                               env_extra={"PYCNI_KILL_AT": "portmap.add.after-rules"})
    assert rc == -9 or rc == 137 or rc != 0
    assert ("CNI-DN-" in node.save(4)) if node.backend == "iptables" else ("chain dn-" in rules(node))  # committed
    chain.delete(c1, None, prev=False)
    assert snapshot(node) == before


def expect_add_error(node: Node, chain: Chain, ctr: str, mappings: list[dict[str, Any]] | None,
                     code: int, part: str, **overrides: Any) -> None:
    before = snapshot(node)
    conf = dict(chain.portmap_conf(ctr, mappings), **overrides)
    out, rc, err = node.run_plugin("portmap", "ADD", conf, ctr)
    assert rc != 0 and out is not None, (out, err)
    assert out["code"] == code and part in out["msg"], out
    assert "Traceback" not in json.dumps(out)
    assert snapshot(node) == before


def test_bad_input_is_a_clear_error_with_nothing_left_behind(node: Node) -> None:
    chain = Chain(node)
    c1 = node.container("c1")
    expect_add_error(node, chain, c1, [tcp(8080)], 7, "must be called as chained plugin")
    out, rc, err = node.run_plugin("bridge", "ADD", chain.bridge, c1)
    assert rc == 0, err
    chain.results[c1] = out
    expect_add_error(node, chain, c1, [tcp(0)], 7, "hostPort")
    expect_add_error(node, chain, c1, [tcp(-5)], 7, "hostPort")
    expect_add_error(node, chain, c1, [tcp(65536)], 7, "hostPort")
    expect_add_error(node, chain, c1, [tcp(8080, 0)], 7, "containerPort")
    expect_add_error(node, chain, c1, [tcp(8080, protocol="icmp")], 7, "protocol")
    expect_add_error(node, chain, c1, [tcp(8080, hostIP="300.1.1.1")], 7, "hostIP")
    expect_add_error(node, chain, c1, [tcp(8080)], 7, "markMasqBit", markMasqBit=32)
    expect_add_error(node, chain, c1, [tcp(8080)], 7, "Cannot specify externalSetMarkChain and markMasqBit",
                     markMasqBit=3, externalSetMarkChain="KUBE-MARK-MASQ")
    expect_add_error(node, chain, c1, [tcp(8080)], 7, "backend", backend="ebtables")
    if node.backend == "nftables":
        # options of the other backend are refused by name, before anything changes
        expect_add_error(node, chain, c1, [tcp(8080)], 7, "iptables-specific options [markMasqBit]", markMasqBit=5)
        expect_add_error(node, chain, c1, [tcp(8080)], 7, "iptables-specific options [externalSetMarkChain]",
                         externalSetMarkChain="KUBE-MARK-MASQ")
        expect_add_error(node, chain, c1, [tcp(8080)], 7, "iptables-specific options [conditionsV4]",
                         conditionsV4=["!", "-s", "10.0.0.0/8"])
        expect_add_error(node, chain, c1, [tcp(8080)], 7, "unsupported nftables condition at 'tcp sport 5'",
                         conditionsV4=["tcp sport 5"])
        # a table of that name made by another program is never changed
        node.exec("nft", "add", "table", "ip", "cni_hostport", "{ comment \"CNI portmap plugin\"; }")
        expect_add_error(node, chain, c1, [tcp(8080)], 999, "not created by pycni")
        node.exec("nft", "delete", "table", "ip", "cni_hostport")
        return
    expect_add_error(node, chain, c1, [tcp(8080)], 7, "nftables-specific options [conditionsV4]",
                     conditionsV4=["ip", "saddr", "10.0.0.0/8"])
    expect_add_error(node, chain, c1, [tcp(8080)], 7, "KUBE-MARK-MASQ not found",
                     externalSetMarkChain="KUBE-MARK-MASQ")
    ns_exec(node.ns, "iptables-legacy", "-t", "nat", "-N", "KUBE-MARK-MASQ")
    out, rc, err = node.run_plugin("portmap", "ADD", dict(chain.portmap_conf(c1, [tcp(8080)]),
                                                         externalSetMarkChain="KUBE-MARK-MASQ"), c1)
    assert rc == 0, err
    assert "-j KUBE-MARK-MASQ" in node.save(4)


def test_conflicting_host_ports_first_container_wins_and_the_second_add_warns(node: Node) -> None:
    chain = Chain(node)
    c1, c2 = node.container("c1"), node.container("c2")
    chain.add(c1, [tcp(8080)])
    out, rc, err = node.run_plugin("bridge", "ADD", chain.bridge, c2)
    assert rc == 0, err
    chain.results[c2] = out
    _, rc, err = node.run_plugin("portmap", "ADD", chain.portmap_conf(c2, [tcp(8080)]), c2)
    assert rc == 0
    assert "hostPort conflict: tcp/8080 (IPv4) is already mapped by pmnet/" + c1 in err
    with server(c1, "tcp", 80, tag="first"), server(c2, "tcp", 80, tag="second"):
        assert request(node.external, "tcp", NODE_V4, 8080).startswith("first")
        chain.delete(c1, None, prev=False)
        assert request(node.external, "tcp", NODE_V4, 8080).startswith("second")


def test_a_backend_switch_between_add_and_del_leaves_the_node_clean(node: Node) -> None:
    """ADD on one backend, the config then names the other: DEL removes the rules from where the record
    says they are; a re-ADD under the new config moves them."""
    chain = Chain(node)
    before = snapshot(node)
    other = "nftables" if node.backend == "iptables" else "iptables"
    c1, c2 = node.container("c1"), node.container("c2")
    chain.add(c1, [tcp(8080)])
    chain.add(c2, [tcp(8081)])
    chain.portmap["backend"] = other
    chain.delete(c1, [tcp(8080)])  # the record says where c1's rules are
    assert "8080" not in node.save(4) and "8080" not in node.nft_ruleset()
    out, rc, err = node.run_plugin("portmap", "ADD", chain.portmap_conf(c2, [tcp(8081)]), c2)
    assert rc == 0, (out, err)  # c2's rules move to the other backend
    with server(c2, "tcp", 80, tag="c2"):
        assert request(node.external, "tcp", NODE_V4, 8081) == f"c2 {EXTERNAL_NET}.2"
    moved = node.nft_ruleset() if other == "nftables" else node.save(4)
    stayed = node.save(4) if other == "nftables" else node.nft_ruleset()
    assert "8081" in moved and "8081" not in stayed
    chain.delete(c2, [tcp(8081)])
    assert snapshot(node) == before
