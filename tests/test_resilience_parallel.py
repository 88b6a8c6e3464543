"""50 containers at once on one network, through the whole chain, as a runtime runs it.

Each operation is one ``cnictl`` process in the node namespace (bridge with host-local in-process,
portmap with one distinct tcp hostPort per container, firewall), 16 at a time. Every hostPort is
proven with real TCP from the external host to node:hostPort, answered by the container (all 50,
not a sample: the servers and clients live in this process, so that costs well under a second).

Afterwards the node must be exactly as before the first ADD: every legacy table of both families,
the nftables ruleset, links, host-local reservations, the plugins' records and claims, the runtime
cache. The bridge is the one exception, by decision: like the reference's, it outlives its last
container (it may carry the node's own configuration), so "after" may hold it and nothing else new.
The store's lock and round-robin cursor files stay too, as in the reference.

Every test with namespaces runs once per netfilter backend (``[iptables]``, ``[nftables]``: portmap
``backend``, bridge ``ipMasqBackend``, firewall ``backend``); the snapshot holds both the legacy tables
and ``nft list ruleset``, so neither backend may leave anything behind, nor touch the other's.

A test without namespaces covers the ownership records themselves: the last attachment of a network
removing the network's directory while another attachment writes its record there.
"""
from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Iterator

import pytest

from cni.errors import CNIError
from cni.records import Attachment, RecordStore

from tests.netenv import Node, node_env
from tests.test_resilience_common import BACKENDS, assert_on_backend, report, touch_tables
from tests.test_resilience_support import listeners  # noqa: F401 - a shared fixture
from tests.test_resilience_support import (
    CHAIN,
    CHAIN_NOTE,
    Cnictl,
    Container,
    Listeners,
    WORKERS,
    address_of,
    answers_from_outside,
    assert_restored,
    full_chain,
    in_parallel,
    install_conflist,
    lifecycle,
    make_containers,
    refused_from_outside,
    snapshot,
)

NETWORK = "rpnet"
BRIDGE = "rp0"
SUBNET = "10.88.0.0/24"  # 253 addresses: 50 + 50 round-robin allocations never wrap, so all are distinct
COUNT = 50
FIGURES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report(request.config, f"resilience-parallel: {COUNT} containers per test, chain {CHAIN_NOTE}", FIGURES)


@pytest.fixture(params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("rp") as n:
        touch_tables(n)
        n.backend = request.param
        install_conflist(n, full_chain(n, NETWORK, BRIDGE, SUBNET, backend=request.param))
        yield n


def containers_listening(node: Node, listeners: Listeners, prefix: str, first_port: int) -> list[Container]:
    containers = make_containers(node, prefix, COUNT, first_port)
    for ctr in containers:
        listeners.listen(ctr)
    return containers


@pytest.mark.root
def test_50_parallel_adds_then_checks_then_dels_leave_the_node_as_before(node: Node, listeners: Listeners) -> None:
    containers = containers_listening(node, listeners, "a", 20000)
    runtime = Cnictl(node, NETWORK)
    before = snapshot(node, NETWORK)

    adds = in_parallel("ADDs", runtime.add, containers)
    addresses = [address_of(result) for result in adds.results]
    assert len(set(addresses)) == COUNT, f"{COUNT - len(set(addresses))} addresses handed out twice: {addresses}"
    assert_on_backend(node, node.backend, CHAIN)
    checks = in_parallel("CHECKs", runtime.check, containers)
    traffic = answers_from_outside(node, containers)
    dels = in_parallel("DELs", runtime.delete, containers)

    for ctr in containers[:3]:  # nothing forwards the ports any more (cheap: a refused connect)
        refused_from_outside(node, ctr)
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)
    FIGURES.append(f"batch [{node.backend}]: {adds.line()}; {checks.line()}; {traffic.line()}; {dels.line()}; "
                   f"{len(set(addresses))} distinct addresses; node restored")


@pytest.mark.root
def test_50_interleaved_lifecycles_16_at_a_time_leave_the_node_as_before(node: Node, listeners: Listeners) -> None:
    """Each worker runs whole lifecycles (ADD, CHECK, traffic, DEL, port closed), so ADDs, CHECKs and
    DELs of different containers overlap all the time, and the shared chains come and go under load."""
    containers = containers_listening(node, listeners, "i", 21000)
    runtime = Cnictl(node, NETWORK)
    before = snapshot(node, NETWORK)

    lifecycles = in_parallel("ADD-CHECK-traffic-DEL lifecycles", lambda c: lifecycle(node, runtime, c), containers)
    addresses = lifecycles.results
    assert len(set(addresses)) == COUNT, f"addresses handed out twice: {sorted(addresses)}"
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)
    FIGURES.append(f"interleaved [{node.backend}]: {lifecycles.line()} ({COUNT * 3} plugin-chain operations, {WORKERS} "
                   f"overlapping); {len(set(addresses))} distinct addresses; node restored")


CHURN_ROUNDS = 1500


def churn_records(root: str, container_id: str, rounds: int, failures: "multiprocessing.Queue[str]") -> None:
    """Save and delete one attachment's record over and over, as its ADDs and DELs would."""
    store = RecordStore(root, "bridge")
    att = Attachment(NETWORK, container_id, "eth0")
    failed = []
    for _ in range(rounds):
        try:
            store.save(att, {"hostVeth": "veth0"})
        except CNIError as err:
            failed.append(str(err))
        store.delete(att)
    failures.put("\n".join(failed[:3]) + (f"\n({len(failed)} failed saves)" if failed else ""))


def test_2_attachments_saving_and_deleting_records_in_parallel_never_fail() -> None:
    """The last attachment of a network deleting its record removes the network's (then empty)
    directory; another attachment's ADD creating its record in that directory at the same moment
    must still succeed. Two processes, 1500 save/delete rounds each, every save must succeed."""
    with tempfile.TemporaryDirectory(prefix="pycni-rp-records-") as root:
        failures: multiprocessing.Queue[str] = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=churn_records, args=(root, f"c{i}", CHURN_ROUNDS, failures))
                   for i in range(2)]
        for worker in workers:
            worker.start()
        reports = [failures.get(timeout=300) for _ in workers]
        for worker in workers:
            worker.join()
        assert [worker.exitcode for worker in workers] == [0, 0]
        assert reports == ["", ""], "\n".join(reports)
        FIGURES.append(f"records: 2 x {CHURN_ROUNDS} parallel save/delete rounds in one network, 0 failed saves")
