"""Shared pieces of the many-container resilience tests (this module holds no tests of its own).

- :func:`full_chain` is the conflist of the whole chain: bridge (host-local in-process), portmap with
  ``snat``, and firewall when it exists, on one netfilter backend (``iptables`` or ``nftables``). :class:`Cnictl` drives it the way a runtime does, one
  ``cnictl`` process per operation in the node namespace (libcni's result cache included);
  :class:`DirectRuntime` execs the installed plugins itself, in order with prevResult, for the cases
  where the test must speak to the plugins without a runtime cache in between (GC at plugin level).
- :func:`in_parallel` runs one operation per container on a thread pool and reports every failure;
  :func:`lifecycle` is one container's whole life (ADD, CHECK, traffic, DEL, port closed).
- :func:`snapshot` is everything the containers could leave on the node: every legacy table of both
  families (each table dumped explicitly, so none appears or vanishes just because it was loaded),
  the nftables ruleset, links, host-local reservations, the plugins' records and the runtime cache.
- :class:`Listeners` / :func:`ask` are real TCP without a process per request: listening sockets
  are opened inside each container's namespace from this process (a socket keeps the namespace it
  was created in) and served by one thread; clients connect from the external host's namespace.
"""
from __future__ import annotations

import pytest

import difflib
import json
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cnictl.cli import derive_container_id
from netlink import netns
from tests.netenv import EXTERNAL_NET, Node, normalize_save
from tests.test_resilience_common import (
    STORE_KEPT,
    backend_options,
    firewall_available,
    nft_ruleset,
    our_nft_tables,
    tree,
)

T = TypeVar("T")
R = TypeVar("R")

NO_HELPER = {"PYCNI_HELPER": "0"}  # every plugin exec does its own work: no resident helper in between
WORKERS = 16
CONTAINER_PORT = 80
NODE_V4 = f"{EXTERNAL_NET}.1"
EXTERNAL_V4 = f"{EXTERNAL_NET}.2"
LEGACY_TABLES = ("filter", "nat", "mangle", "raw", "security")
FIREWALL = firewall_available()
CHAIN = ("bridge", "portmap") + (("firewall",) if FIREWALL else ())
CHAIN_NOTE = " + ".join(CHAIN) + ("" if FIREWALL else " (firewall/plugin.py has no PLUGIN yet: left out)")
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"


# --- the network -------------------------------------------------------------------------------

def full_chain(node: Node, network: str, bridge: str, subnet: str,
               range_start: str | None = None, range_end: str | None = None,
               backend: str = "iptables") -> dict[str, Any]:
    """A cniVersion 1.1.0 conflist: bridge + host-local, portmap (snat), firewall when present, every
    plugin's rules on ``backend``."""
    address_range: dict[str, str] = {"subnet": subnet}
    if range_start:
        address_range["rangeStart"] = range_start
    if range_end:
        address_range["rangeEnd"] = range_end
    plugins: list[dict[str, Any]] = [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "stateDir": node.state_dir,
         "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[address_range]],
                  "routes": [{"dst": "0.0.0.0/0"}]}, **backend_options("bridge", backend)},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True, "stateDir": node.state_dir,
         **backend_options("portmap", backend)},
    ]
    if FIREWALL:
        plugins.append({"type": "firewall", "stateDir": node.state_dir, **backend_options("firewall", backend)})
    return {"cniVersion": "1.1.0", "name": network, "plugins": plugins}


def install_conflist(node: Node, conflist: dict[str, Any]) -> None:
    with open(os.path.join(node.netconf_dir, f"{conflist['name']}.conflist"), "w") as f:
        json.dump(conflist, f)


@dataclass(frozen=True)
class Container:
    """One container: its netns (``ip netns`` name), the hostPort it publishes, and its identity."""

    ns: str
    host_port: int

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.ns}"

    @property
    def container_id(self) -> str:
        """What cnictl derives from the netns path (stable, so a re-created netns is the same container)."""
        return derive_container_id(self.netns_path)

    @property
    def tag(self) -> str:
        return self.ns

    def __str__(self) -> str:
        return f"{self.ns}(:{self.host_port})"


def make_containers(node: Node, prefix: str, count: int, first_port: int) -> list[Container]:
    return [Container(node.container(f"{prefix}{i}"), first_port + i) for i in range(count)]


def address_of(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


# --- runtimes ------------------------------------------------------------------------------------

class Cnictl:
    """A runtime on the node: ``cnictl add|check|del|gc`` for one network, each its own process."""

    def __init__(self, node: Node, network: str) -> None:
        self.node = node
        self.network = network

    def add(self, ctr: Container) -> dict[str, Any]:
        proc = self.node.cnictl("add", self.network, ctr.ns, "--publish", f"{ctr.host_port}:{CONTAINER_PORT}/tcp",
                                env_extra=NO_HELPER)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def check(self, ctr: Container) -> None:
        self.node.cnictl("check", self.network, ctr.ns, env_extra=NO_HELPER)

    def delete(self, ctr: Container) -> None:
        self.node.cnictl("del", self.network, ctr.ns, env_extra=NO_HELPER)

    def gc(self, valid: Iterable[Container]) -> str:
        """``cnictl gc NETWORK --valid ID/eth0 ...``; returns cnictl's stderr (its notes on what it deleted)."""
        args = [arg for ctr in valid for arg in ("--valid", f"{ctr.container_id}/eth0")]
        proc = self.node.cnictl("gc", self.network, *args, env_extra=NO_HELPER)
        return proc.stderr.decode(errors="replace")


class DirectRuntime:
    """libcni's list operations done here: each installed plugin exec'd in the node namespace, in order,
    with the previous plugin's result as prevResult (requests built by cnictl's libcni-equivalent)."""

    def __init__(self, node: Node, conflist: dict[str, Any]) -> None:
        from cnictl.config import parse_list  # noqa: PLC0415

        self.node = node
        self.net = parse_list(json.dumps(conflist).encode())

    def _caps(self, ctr: Container) -> dict[str, Any]:
        return {"portMappings": [{"hostPort": ctr.host_port, "containerPort": CONTAINER_PORT, "protocol": "tcp"}]}

    def _run(self, index: int, command: str, request: dict[str, Any], ctr: Container | None) -> dict[str, Any] | None:
        plugin = self.net.plugin_type(index)
        if ctr is None:  # GC and STATUS: libcni sends the attachment variables empty
            out, rc, err = self.node.run_plugin(plugin, command, request, "", ifname="", env_extra=NO_HELPER)
        else:
            out, rc, err = self.node.run_plugin(plugin, command, request, ctr.ns, container_id=ctr.container_id,
                                                env_extra=NO_HELPER)
        if rc != 0:
            raise AssertionError(f"{plugin} {command} {ctr or ''} failed ({rc}): {out} {err.strip()[-2000:]}")
        return out

    def add(self, ctr: Container) -> dict[str, Any]:
        from cnictl.runtime import build_request  # noqa: PLC0415

        result: dict[str, Any] | None = None
        for index in range(len(self.net.plugins)):
            result = self._run(index, "ADD", build_request(self.net, index, result, self._caps(ctr)), ctr)
        assert result is not None
        return result

    def check(self, ctr: Container, result: dict[str, Any]) -> None:
        from cnictl.runtime import build_request  # noqa: PLC0415

        for index in range(len(self.net.plugins)):
            self._run(index, "CHECK", build_request(self.net, index, result, self._caps(ctr)), ctr)

    def delete(self, ctr: Container, result: dict[str, Any] | None = None, mappings: bool = True) -> None:
        from cnictl.runtime import build_request  # noqa: PLC0415

        for index in reversed(range(len(self.net.plugins))):
            request = build_request(self.net, index, result, self._caps(ctr) if mappings else None)
            self._run(index, "DEL", request, ctr)

    def gc(self, valid: Iterable[Container]) -> None:
        """GC to every plugin (cniVersion 1.1.0) with ``cni.dev/valid-attachments``."""
        from cnictl.runtime import build_request  # noqa: PLC0415

        listed = [{"containerID": ctr.container_id, "ifname": "eth0"} for ctr in valid]
        for index in range(len(self.net.plugins)):
            request = build_request(self.net, index)
            request[VALID_ATTACHMENTS_KEY] = listed
            self._run(index, "GC", request, None)


# --- running many at once --------------------------------------------------------------------------

@dataclass
class Batch:
    """What one parallel batch did: results in item order, wall time."""

    what: str
    results: list[Any]
    seconds: float

    def line(self) -> str:
        return f"{len(self.results)} {self.what} held, {WORKERS} workers, {self.seconds:.1f}s"


def in_parallel(what: str, fn: Callable[[T], R], items: Sequence[T], workers: int = WORKERS) -> Batch:
    """``fn(item)`` for every item on ``workers`` threads; fails listing every item that failed."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, item) for item in items]
        outcomes: list[tuple[T, Any, BaseException | None]] = []
        for item, future in zip(items, futures):
            try:
                outcomes.append((item, future.result(), None))
            except Exception as exc:  # noqa: BLE001 - collected and reported below, all of them
                outcomes.append((item, None, exc))
    failures = [f"{item}: {exc}" for item, _, exc in outcomes if exc is not None]
    assert not failures, f"{len(failures)} of {len(items)} parallel {what} failed:\n" + "\n".join(failures)
    return Batch(what, [value for _, value, _ in outcomes], time.monotonic() - started)


# --- what the node holds -------------------------------------------------------------------------

def legacy_tables(node: Node) -> dict[str, str]:
    """Every legacy table of both families, each dumped explicitly (dumping loads it)."""
    out = {}
    for family, tool in ((4, "iptables-legacy-save"), (6, "ip6tables-legacy-save")):
        for table in LEGACY_TABLES:
            out[f"v{family} {table}"] = normalize_save(node.exec(tool, "-t", table).stdout.decode())
    return out


def files_under(root: str) -> dict[str, Any]:
    """Files (not directories) under ``root`` with their contents: records, claims, cache entries."""
    return {path: entry for path, entry in tree(root).items() if entry[0] != "dir"}


def snapshot(node: Node, network: str) -> dict[str, Any]:
    return {
        "tables": legacy_tables(node),
        "nft": nft_ruleset(node),
        "links": node.links(),
        # The store's lock and round-robin cursors stay, as in the reference: they belong to no attachment.
        "reservations": tree(os.path.join(node.data_dir, network), skip=STORE_KEPT),
        "records": files_under(node.state_dir),
        "cache": files_under(node.cache_dir),
    }


def snapshot_diff(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Readable differences between two snapshots (unified diffs for text)."""
    out: list[str] = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted(set(old) | set(new)):
                a, b = old.get(sub), new.get(sub)
                if a == b:
                    continue
                if isinstance(a, str) and isinstance(b, str):
                    out += [f"{key}[{sub}] {line}" for line in difflib.unified_diff(
                        a.splitlines(), b.splitlines(), lineterm="", n=0)][2:]
                else:
                    out.append(f"{key}[{sub}]: {a!r} -> {b!r}"[:400])
        elif isinstance(old, str) and isinstance(new, str):
            out += [f"{key} {line}" for line in difflib.unified_diff(
                old.splitlines(), new.splitlines(), lineterm="", n=0)][2:]
        else:
            out.append(f"{key}: {old!r} -> {new!r}"[:400])
    return out


def assert_restored(before: dict[str, Any], now: dict[str, Any], bridge: str) -> None:
    """``now`` equals ``before``, except that the bridge may have stayed: like the reference's, it
    outlives its last container (it may carry the node's own configuration)."""
    now = dict(now, links=[name for name in now["links"] if name != bridge or name in before["links"]])
    diff = snapshot_diff(before, now)
    assert not diff, f"the node is not as before ({len(diff)} differences):\n" + "\n".join(diff[:200])


# an address on its own: not a network (10.88.0.0/24) nor an end of a range (10.88.0.0-10.88.0.255)
HOST_ADDRESS = re.compile(r"(?<![\d.-])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\d/-])")


def container_addresses_in(text: str, subnet: str) -> set[str]:
    """Host addresses of ``subnet`` that ``text`` names (not the subnet's own address, which a table may
    hold as the key of a masked lookup)."""
    import ipaddress  # noqa: PLC0415

    network = ipaddress.ip_network(subnet)
    return {a for a in HOST_ADDRESS.findall(text)
            if ipaddress.ip_address(a) in network and ipaddress.ip_address(a) != network.network_address}


def attached_problems(node: Node, network: str, backend: str, containers: Sequence[Container],
                      addresses: dict[str, str], subnet: str, others: Iterable[str] = ()) -> list[str]:
    """What is missing or extra in our rules for exactly ``containers`` attached (``addresses`` by netns):
    each one's DNAT of its hostPort to its address, its masquerading, its firewall entry, and nobody
    else's (the chains named in ``others`` are not ours). On nftables this goes by what each of our
    tables holds rather than by its inner layout: the DNATs in ``ip cni_hostport``, and exactly the
    containers' addresses in each of our tables."""
    from bridge.ipmasq_iptables import chain_name as masq_chain  # noqa: PLC0415
    from portmap.names import dnat_chain  # noqa: PLC0415

    problems: list[str] = []
    wanted = {addresses[ctr.ns] for ctr in containers}
    if backend == "nftables":
        ours = our_nft_tables(nft_ruleset(node))
        hostport = ours.get("ip cni_hostport", "")
        for ctr in containers:
            address = addresses[ctr.ns]
            if not re.search(rf"tcp dport {ctr.host_port} dnat (ip )?to {re.escape(address)}:{CONTAINER_PORT}\n",
                             hostport):
                problems.append(f"{ctr}: no DNAT of {ctr.host_port} to {address} in ip cni_hostport")
        dnats = re.findall(r" dnat (?:ip )?to ", hostport)
        tables = ["ip cni_hostport", "inet cni_plugins_masquerade"] + (["inet cni_firewall"] if FIREWALL else [])
        for table in tables:
            held = container_addresses_in(ours.get(table, ""), subnet)
            if held != wanted:
                problems.append(f"{table}: addresses missing {sorted(wanted - held)}, not ours {sorted(held - wanted)}")
        masqs = dnats  # the masquerade table has no chain per container: its addresses were compared above
    else:
        v4 = node.save(4)
        for ctr in containers:
            address, dn = addresses[ctr.ns], dnat_chain(network, ctr.container_id)
            if not re.search(rf"^-A {dn} .*--dport {ctr.host_port} .*--to-destination {re.escape(address)}:"
                             rf"{CONTAINER_PORT}$", v4, re.M):
                problems.append(f"{ctr}: chain {dn} has no DNAT of {ctr.host_port} to {address}")
            if f":{masq_chain(network, ctr.container_id)} " not in v4:
                problems.append(f"{ctr}: no masquerade chain {masq_chain(network, ctr.container_id)}")
            if FIREWALL and f"-A CNI-FORWARD -s {address}/32 -j ACCEPT" not in v4:
                problems.append(f"{ctr}: {address} not accepted in CNI-FORWARD")
        dnats = [line for line in v4.splitlines() if line.startswith(":CNI-DN-")]
        masqs = [line for line in v4.splitlines()
                 if re.match(r":CNI-[0-9a-f]{24} ", line) and line[1:].split()[0] not in set(others)]
        if FIREWALL:
            forward = "\n".join(line for line in v4.splitlines() if line.startswith("-A CNI-FORWARD"))
            held = container_addresses_in(forward.replace("/32 ", " "), subnet)
            if held != wanted:
                problems.append(f"CNI-FORWARD: addresses missing {sorted(wanted - held)}, "
                                f"not ours {sorted(held - wanted)}")
    if len(dnats) != len(containers) or len(masqs) != len(containers):
        problems.append(f"{len(dnats)} DNATs and {len(masqs)} masquerade chains for {len(containers)} containers")
    return problems


# --- real TCP in namespaces, in-process ------------------------------------------------------------

class Listeners:
    """TCP listeners on :data:`CONTAINER_PORT` in many namespaces, all served by one thread.

    Each answers ``"<tag> <peer address>"`` to whatever it receives. A listening socket keeps its
    namespace alive, so :meth:`close` a container's listener before deleting its netns when the
    test needs the namespace (and its veth) really gone.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="listeners", daemon=True)
        self._thread.start()

    def listen(self, ctr: Container) -> None:
        with netns.enter(ctr.netns_path):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", CONTAINER_PORT))
        sock.listen(128)
        sock.setblocking(False)
        with self._lock:
            self._sockets[ctr.tag] = sock
            self._selector.register(sock, selectors.EVENT_READ, ctr.tag)

    def close(self, ctr: Container) -> None:
        with self._lock:
            sock = self._sockets.pop(ctr.tag, None)
            if sock is not None:
                self._selector.unregister(sock)
                sock.close()

    def close_all(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in self._sockets.values():
                self._selector.unregister(sock)
                sock.close()
            self._sockets.clear()
        self._selector.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                events = self._selector.select(timeout=0) if self._sockets else []
            if not events:
                time.sleep(0.005)
                continue
            for key, _ in events:
                self._answer(key.fileobj, key.data)  # type: ignore[arg-type]

    @staticmethod
    def _answer(listener: socket.socket, tag: str) -> None:
        try:
            conn, peer = listener.accept()
        except OSError:  # another wake-up took it, or the listener was closed meanwhile
            return
        with conn:
            try:
                conn.settimeout(2)
                conn.recv(100)
                conn.sendall(f"{tag} {peer[0]}".encode())
            except OSError:
                pass


def ask(from_netns: str, host: str, port: int, timeout: float = 3.0) -> str:
    """What a TCP server at host:port answers a client in ``from_netns`` (a path), or ``ERROR ...``."""
    with netns.enter(from_netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(b"hi")
        return sock.recv(100).decode()
    except OSError as exc:
        return f"ERROR {exc}"
    finally:
        sock.close()


def answers_from_outside(node: Node, containers: Sequence[Container]) -> Batch:
    """Every container answers on node:hostPort from the external host, seeing the external address."""
    external = f"/run/netns/{node.external}"

    def one(ctr: Container) -> str:
        answer = ask(external, NODE_V4, ctr.host_port)
        assert answer == f"{ctr.tag} {EXTERNAL_V4}", f"{NODE_V4}:{ctr.host_port} answered {answer!r}"
        return answer

    return in_parallel("hostPorts answering", one, containers)


def refused_from_outside(node: Node, ctr: Container) -> None:
    """After DEL nothing forwards the hostPort any more: the node itself refuses it."""
    answer = ask(f"/run/netns/{node.external}", NODE_V4, ctr.host_port, timeout=2)
    assert answer.startswith("ERROR") and "refused" in answer, \
        f"{NODE_V4}:{ctr.host_port} still answered after DEL: {answer!r}"


def lifecycle(node: Node, runtime: Cnictl, ctr: Container) -> str:
    """One container's whole life: ADD, CHECK, its hostPort answers, DEL, the port is closed again.
    Returns its address."""
    address = address_of(runtime.add(ctr))
    runtime.check(ctr)
    answer = ask(f"/run/netns/{node.external}", NODE_V4, ctr.host_port)
    assert answer.startswith(f"{ctr.tag} "), f"{NODE_V4}:{ctr.host_port} answered {answer!r} while attached"
    runtime.delete(ctr)
    refused_from_outside(node, ctr)
    return address


@pytest.fixture
# Shared by the resilience modules (imported there): every listener is closed, whatever the test did.
def listeners() -> Iterator[Listeners]:
    servers = Listeners()
    try:
        yield servers
    finally:
        servers.close_all()


# --- other programs' nftables tables ------------------------------------------------------------------
# What kube-proxy (nftables mode) and firewalld keep on a node, shortened: base chains on the hooks our
# tables use too, sets and verdict maps, jumps between chains. Every rule matches only TEST-NET-3
# (203.0.113.0/24) and every base chain accepts by policy, so they never change what our containers'
# packets do; they only have to come through our transactions untouched.

FOREIGN_NFT_TABLES = {
    "inet kube-proxy": """\
table inet kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 203.0.113.10, 203.0.113.11 }
	}
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
		elements = { 203.0.113.10 . tcp . 80 : goto service-web, 203.0.113.11 . udp . 53 : goto service-dns }
	}
	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
	}
	chain service-web {
		ip saddr != 203.0.113.0/24 jump mark-for-masquerade
		meta l4proto tcp dnat ip to 203.0.113.20:8080
	}
	chain service-dns {
		meta l4proto udp dnat ip to 203.0.113.21:5353
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 203.0.113.0/24 jump services
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		ip daddr 203.0.113.0/24 jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr 203.0.113.0/24 jump masquerading
	}
	chain filter-forward {
		type filter hook forward priority -110; policy accept;
		ip daddr 203.0.113.0/24 jump firewall-check
	}
	chain firewall-check {
		ip daddr 203.0.113.99 tcp dport 9999 drop
	}
}
""",
    "inet firewalld": """\
table inet firewalld {
	set allowed-sources {
		type ipv4_addr
		elements = { 203.0.113.40, 203.0.113.41 }
	}
	chain filter_INPUT {
		type filter hook input priority filter + 10; policy accept;
		ip saddr 203.0.113.0/24 jump filter_IN_public
	}
	chain filter_FORWARD {
		type filter hook forward priority filter + 10; policy accept;
		ip saddr 203.0.113.0/24 jump filter_IN_public
	}
	chain filter_IN_public {
		ip saddr @allowed-sources accept
		jump filter_IN_public_allow
	}
	chain filter_IN_public_allow {
		tcp dport 22 accept
		ip saddr 203.0.113.66 reject with icmpx admin-prohibited
	}
}
""",
}


def install_foreign_nft_tables(node: Node) -> dict[str, str]:
    """Create the foreign tables in the node namespace; returns nft's listing of each."""
    node.exec("nft", "-f", "-", input="".join(FOREIGN_NFT_TABLES.values()).encode())
    return foreign_nft_listing(node)


def foreign_nft_listing(node: Node) -> dict[str, str]:
    """``nft list table`` of each foreign table (empty text for one that is not there)."""
    out = {}
    for name in FOREIGN_NFT_TABLES:
        proc = node.exec("nft", "--stateless", "list", "table", *name.split(), check=False)
        out[name] = proc.stdout.decode() if proc.returncode == 0 else ""
    return out
