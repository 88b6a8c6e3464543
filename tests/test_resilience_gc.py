"""GC after a runtime crash and after a node reboot; DEL after the state directory was lost.

The network's host-local range holds exactly 12 addresses and 12 containers fill it, so a later ADD
can only succeed on an address GC freed; each fresh container also takes over the hostPort of a
stale one (rotated, so a stale DNAT rule left behind would send the traffic to the wrong container).
Before each GC an ADD is shown to fail for want of addresses: the reservations really were still
held, and GC is what frees them.

- crash: 8 of 12 containers vanish without DEL (their netns deleted) while the node keeps running,
  so their masquerade chains, DNAT chains, firewall rules, records, claims and reservations are all
  still there. GC goes to each plugin directly (cniVersion 1.1.0, ``cni.dev/valid-attachments``
  naming the 4 survivors), the way a runtime without a result cache sends it.
- reboot: the node "reboots" (every legacy table flushed, the containers' netns, the veths and the
  bridge gone, ip_forward off) but keeps its state directories (host-local dataDir, our stateDir,
  cnictl's cache). ``cnictl gc NETWORK --valid ...`` then DELs the stale attachments it has cached
  and sends GC to every plugin; half of the stale ones were dropped from the cache first, so only the
  plugins' own GC can free those.
- tmpfs: as reboot, but the plugins' stateDir was on tmpfs and is gone. DEL of containers the
  plugins know nothing of any more (with the runtime's cached prevResult and portMappings, without
  them, and for a container that never existed) succeeds and leaves nothing.

Survivors keep their records, claims, reservations and cache entries byte for byte, and (crash)
their chains: their CHECK passes and their hostPorts answer. At the end everything is DELeted and
the node is exactly as before the first ADD (the bridge may stay, as in the reference).

Each test runs once per netfilter backend (``[iptables]``, ``[nftables]``). The stale attachments'
traces are looked for in the legacy tables and in ``nft list ruleset`` (their ``CNI-``/``dn-``
chains, comments naming them, their addresses in rules and set elements); a reboot flushes the nftables ruleset too. On
nftables the stranger also owns a foreign nftables table, which must come through GC byte for byte.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from bridge.ipmasq_iptables import chain_name as masq_chain
from portmap.names import dnat_chain
from portmap.nft import dnat_chain_name as nft_dnat_chain
from tests.netenv import Node, node_env, wait_for
from tests.test_resilience_common import (
    BACKENDS,
    STORE_KEPT,
    assert_on_backend,
    nft_ruleset,
    report,
    touch_tables,
    tree,
)
from tests.test_resilience_support import listeners  # noqa: F401 - a shared fixture
from tests.test_resilience_support import (
    CHAIN,
    CHAIN_NOTE,
    FOREIGN_NFT_TABLES,
    LEGACY_TABLES,
    NO_HELPER,
    Cnictl,
    Container,
    DirectRuntime,
    Listeners,
    address_of,
    answers_from_outside,
    assert_restored,
    files_under,
    foreign_nft_listing,
    full_chain,
    in_parallel,
    install_conflist,
    install_foreign_nft_tables,
    legacy_tables,
    snapshot,
)

pytestmark = pytest.mark.root

NETWORK = "rgnet"
BRIDGE = "rg0"
SUBNET = "10.88.0.0/24"
RANGE = ("10.88.0.2", "10.88.0.13")  # exactly 12 addresses
COUNT = 12
SURVIVORS = 4
NO_ADDRESSES = 11  # TRY_AGAIN_LATER: "no IP addresses available"
FIGURES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report(request.config, f"resilience-gc: {COUNT} containers filling a {COUNT}-address range, "
                           f"{SURVIVORS} survive, chain {CHAIN_NOTE}", FIGURES)


@pytest.fixture(params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("rg") as n:
        touch_tables(n)
        n.backend = request.param
        install_conflist(n, conflist(n))
        yield n


def conflist(node: Node) -> dict[str, Any]:
    return full_chain(node, NETWORK, BRIDGE, SUBNET, *RANGE, backend=node.backend)


def rule_texts(node: Node) -> dict[str, str]:
    """Every place a rule of ours could be: the legacy tables of both families and the nftables ruleset."""
    return dict(legacy_tables(node), nft=nft_ruleset(node))


def fleet(node: Node, listeners: Listeners, prefix: str, ports: Iterable[int]) -> list[Container]:
    containers = [Container(node.container(f"{prefix}{i}"), port) for i, port in enumerate(ports)]
    for ctr in containers:
        listeners.listen(ctr)
    return containers


def successors(stale: list[Container], node: Node, listeners: Listeners) -> list[Container]:
    """Fresh containers on the stale ones' hostPorts, rotated by one."""
    ports = [ctr.host_port for ctr in stale[1:] + stale[:1]]
    return fleet(node, listeners, "f", ports)


def mentioning(entries: dict[str, Any], containers: Iterable[Container]) -> dict[str, Any]:
    """The files (from ``tree``) whose path or content names one of the containers."""
    ids = [ctr.container_id for ctr in containers]
    return {path: entry for path, entry in entries.items()
            if any(cid in path or (entry[0] == "file" and cid.encode() in entry[2]) for cid in ids)}


def held_state(node: Node) -> dict[str, dict[str, Any]]:
    """Records and claims, reservations and cache entries: what GC may free."""
    return {"records": files_under(node.state_dir),
            "reservations": tree(os.path.join(node.data_dir, NETWORK), skip=STORE_KEPT),
            "cache": files_under(node.cache_dir)}


def assert_only_survivors_hold(node: Node, held_before: dict[str, dict[str, Any]], survivors: list[Container],
                               stale: list[Container]) -> None:
    now = held_state(node)
    for kind, entries in now.items():
        kept = mentioning(held_before[kind], survivors)
        assert entries == kept, (f"{kind} after GC: stale left {sorted(set(entries) - set(kept))}, "
                                 f"survivors' lost or changed {sorted(p for p in kept if entries.get(p) != kept[p])}")
        assert not mentioning(entries, stale)


def add_fails_for_want_of_addresses(node: Node, runtime: DirectRuntime, ctr: Container) -> None:
    """The negative control: the range is still full, so GC has not happened yet."""
    from cnictl.runtime import build_request  # noqa: PLC0415

    out, rc, err = node.run_plugin("bridge", "ADD", build_request(runtime.net, 0), ctr.ns,
                                   container_id=ctr.container_id, env_extra=NO_HELPER)
    assert rc != 0 and out is not None and out.get("code") == NO_ADDRESSES, (out, err)


def stale_traces(tables: dict[str, str], stale: list[Container], addresses: dict[str, str]) -> list[str]:
    """What the tables still hold of a stale container (its chains, its comments, its address), one
    entry per name found in a line: iptables-save lines, and nft listing lines (where a set's elements
    line may hold several addresses)."""
    needles: list[re.Pattern[str]] = []
    for ctr in stale:
        names = [masq_chain(NETWORK, ctr.container_id), dnat_chain(NETWORK, ctr.container_id),
                 f"id: \\\"{ctr.container_id}\\\"", nft_dnat_chain(NETWORK, ctr.container_id),
                 f"id: {ctr.container_id}\""]
        needles += [re.compile(re.escape(name)) for name in names]
        # the address, but not as the start of a longer one (10.88.0.1 is not in 10.88.0.13)
        needles.append(re.compile(r"(?<![\d.])" + re.escape(addresses[ctr.ns]) + r"(?![\d])"))
    return [f"{needle.pattern} in: {line.strip()}" for text in tables.values() for line in text.splitlines()
            for needle in needles if needle.search(line)]


def reboot(node: Node, listeners: Listeners, containers: list[Container]) -> None:
    """What a reboot does to the node: namespaces, links, tables and sysctls gone; disks kept."""
    for ctr in containers:
        listeners.close(ctr)  # an open socket would keep the namespace (and its veth) alive
        node.namespaces.remove(ctr.ns)
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table in LEGACY_TABLES:
            node.exec(tool, "-w", "-t", table, "-F")
            node.exec(tool, "-w", "-t", table, "-X")
    node.exec("nft", "flush", "ruleset")
    node.exec("ip", "link", "del", BRIDGE)
    node.exec("sysctl", "-qw", "net.ipv4.ip_forward=0")
    assert wait_for(lambda: not [l for l in node.links() if l.startswith("veth")], timeout=10), node.links()


def recreate(node: Node, ctr: Container, listeners: Listeners) -> None:
    """The runtime brings a container back in a new netns of the same name (so the same container ID)."""
    node.container(ctr.ns.split("-", 1)[1])
    listeners.listen(ctr)


def install_stranger(node: Node) -> None:
    """Rules that belong to nobody in our records: another network's masquerade chain (the reference
    bridge plugin's layout) and a rule of someone else's in PREROUTING. Part of the baseline."""
    stranger = masq_chain("othernet", "stranger")
    note = '-m comment --comment "name: \\"othernet\\" id: \\"stranger\\""'
    rules = "\n".join(["*nat", f":{stranger} - [0:0]",
                       f"-A POSTROUTING -s 10.99.0.5/32 {note} -j {stranger}",
                       f"-A {stranger} -d 10.99.0.0/24 {note} -j ACCEPT",
                       f"-A {stranger} ! -d 224.0.0.0/4 {note} -j MASQUERADE",
                       '-A PREROUTING -d 203.0.113.7/32 -p tcp -m tcp --dport 80 -m comment --comment "someone else" '
                       "-j DNAT --to-destination 203.0.113.9:8080", "COMMIT", ""])
    node.exec("iptables-legacy-restore", "-w", "--noflush", input=rules.encode())
    if node.backend == "nftables":  # and tables of other programs next to ours
        install_foreign_nft_tables(node)


def test_gc_after_a_runtime_crash_removes_8_stale_attachments_and_keeps_4(node: Node, listeners: Listeners) -> None:
    install_stranger(node)
    foreign = foreign_nft_listing(node)
    runtime = DirectRuntime(node, conflist(node))
    containers = fleet(node, listeners, "c", range(23000, 23000 + COUNT))
    survivors, stale = containers[:SURVIVORS], containers[SURVIVORS:]
    before = snapshot(node, NETWORK)
    results = dict(zip([c.ns for c in containers], in_parallel("ADDs", runtime.add, containers).results))
    addresses = {ns: address_of(result) for ns, result in results.items()}
    assert_on_backend(node, node.backend, CHAIN, others=[masq_chain("othernet", "stranger")])

    for ctr in stale:  # the runtime crashed and forgot them; their netns went with it
        listeners.close(ctr)
        node.namespaces.remove(ctr.ns)
    fresh = successors(stale, node, listeners)
    add_fails_for_want_of_addresses(node, runtime, fresh[0])
    traces_before = stale_traces(rule_texts(node), stale, addresses)
    assert len(traces_before) >= 5 * len(stale), "the stale attachments' rules were not there to collect"
    held_before = held_state(node)
    assert mentioning(held_before["records"], stale) and mentioning(held_before["reservations"], stale)

    runtime.gc(survivors)

    assert stale_traces(rule_texts(node), stale, addresses) == []
    assert foreign_nft_listing(node) == foreign, "GC changed another program's nftables table"
    assert_only_survivors_hold(node, held_before, survivors, stale)
    assert wait_for(lambda: len([l for l in node.links() if l.startswith("veth")]) == SURVIVORS), node.links()
    in_parallel("survivors' CHECKs", lambda c: runtime.check(c, results[c.ns]), survivors)
    answers_from_outside(node, survivors)

    results.update(zip([c.ns for c in fresh], in_parallel("fresh ADDs", runtime.add, fresh).results))
    fresh_addresses = {address_of(results[c.ns]) for c in fresh}
    assert fresh_addresses == {addresses[c.ns] for c in stale}, "fresh containers did not get the freed addresses"
    traffic = answers_from_outside(node, survivors + fresh)  # each on a port a stale container had

    in_parallel("DELs", lambda c: runtime.delete(c, results[c.ns]), survivors + fresh)
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)
    FIGURES.append(f"crash [{node.backend}]: {len(traces_before)} stale rule traces, "
                   f"{len(mentioning(held_before['records'], stale))} "
                   f"records/claims and {len(mentioning(held_before['reservations'], stale))} reservations of "
                   f"{len(stale)} stale attachments removed by plugin GC; {SURVIVORS} survivors kept theirs and "
                   f"answered; {len(fresh)} fresh ADDs got the freed addresses and hostPorts "
                   f"({traffic.line()}); stranger rules untouched; node restored")


def test_gc_after_reboot_frees_8_stale_attachments_and_new_adds_reuse_their_addresses_and_ports(
        node: Node, listeners: Listeners) -> None:
    runtime = Cnictl(node, NETWORK)
    direct = DirectRuntime(node, conflist(node))
    containers = fleet(node, listeners, "c", range(24000, 24000 + COUNT))
    survivors, stale = containers[:SURVIVORS], containers[SURVIVORS:]
    before = snapshot(node, NETWORK)
    addresses = {c.ns: address_of(r) for c, r in zip(containers, in_parallel("ADDs", runtime.add, containers).results)}

    reboot(node, listeners, containers)
    forgotten = stale[len(stale) // 2:]  # the runtime lost their cache entries: only plugin GC can free them
    for ctr in forgotten:
        os.unlink(os.path.join(node.cache_dir, "results", f"{NETWORK}-{ctr.container_id}-eth0"))
    fresh = successors(stale, node, listeners)
    add_fails_for_want_of_addresses(node, direct, fresh[0])
    held_before = held_state(node)

    notes = runtime.gc(survivors)

    assert notes.count("deleting stale attachment") == len(stale) - len(forgotten), notes
    assert_only_survivors_hold(node, held_before, survivors, stale)
    fresh_addresses = {address_of(r) for r in in_parallel("fresh ADDs", runtime.add, fresh).results}
    assert fresh_addresses == {addresses[c.ns] for c in stale}, "fresh containers did not get the freed addresses"
    answers_from_outside(node, fresh)

    for ctr in survivors:  # the runtime restores them: DEL of the pre-reboot attachment, then ADD
        recreate(node, ctr, listeners)
        runtime.delete(ctr)
        assert address_of(runtime.add(ctr)) == addresses[ctr.ns]  # the only address free: its own
    in_parallel("CHECKs", runtime.check, survivors + fresh)
    traffic = answers_from_outside(node, survivors + fresh)

    in_parallel("DELs", runtime.delete, survivors + fresh)
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)
    FIGURES.append(f"reboot [{node.backend}]: cnictl gc DELed {len(stale) - len(forgotten)} cached stale attachments, "
                   "plugin GC "
                   f"freed {len(forgotten)} uncached ones ({len(mentioning(held_before['reservations'], stale))} "
                   f"reservations, {len(mentioning(held_before['records'], stale))} records/claims); {SURVIVORS} "
                   f"survivors kept theirs; {len(fresh)} fresh ADDs reused the freed addresses and hostPorts; "
                   f"{traffic.line()}; node restored")


def test_del_after_the_tmpfs_state_dir_was_lost_succeeds_and_leaves_nothing(node: Node, listeners: Listeners) -> None:
    runtime = Cnictl(node, NETWORK)
    direct = DirectRuntime(node, conflist(node))
    containers = fleet(node, listeners, "c", range(25000, 25006))
    before = snapshot(node, NETWORK)
    in_parallel("ADDs", runtime.add, containers)

    reboot(node, listeners, containers)
    shutil.rmtree(node.state_dir)  # tmpfs: gone with the reboot; dataDir and the cache are on disk
    with_cache, bare = containers[:3], containers[3:5]
    never_existed = Container(f"{node.namespaces.prefix}-ghost", 25999)

    in_parallel("cnictl DELs with cached prevResult", runtime.delete, with_cache)
    for ctr in bare:  # the runtime lost its cache too: no prevResult, no portMappings
        direct.delete(ctr, None, mappings=False)
    direct.delete(never_existed, None, mappings=False)
    direct.delete(never_existed, None, mappings=True)
    nothing_created = snapshot(node, NETWORK)
    assert nothing_created["records"] == {} and BRIDGE not in nothing_created["links"]
    assert [l for l in nothing_created["links"] if l.startswith("veth")] == []
    assert set(mentioning(nothing_created["reservations"], containers[:5])) == set(), "DEL left reservations"

    notes = runtime.gc([])  # the rest: cached ones DELed by cnictl, the reservation freed
    assert notes.count("deleting stale attachment") == 3, notes  # bare ones' entries and the 6th
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)

    again = fleet(node, listeners, "n", [25000])  # the node works again, state dir re-created
    runtime.add(again[0])
    runtime.check(again[0])
    answers_from_outside(node, again)
    runtime.delete(again[0])
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)
    FIGURES.append(f"tmpfs [{node.backend}]: {len(with_cache)} DELs with the cached result, {len(bare)} bare DELs "
                   "and 2 DELs of a "
                   "container that never existed succeeded with no state dir and created nothing; "
                   "reservations freed; a new ADD afterwards works; node restored")
