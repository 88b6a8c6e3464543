"""Our plugins and another program rewriting the same tables at the same time lose nothing of each other.

While 50 containers go through the whole chain in parallel (ADD, CHECK, traffic, then DEL interleaved
with the whole lifecycles of 25 more, 16 operations at a time, each a ``cnictl`` process), a foreign
writer in the node namespace keeps changing the very tables we use:

- ``iptables-legacy -w`` appends, inserts at the top of and deletes rules in nat PREROUTING /
  POSTROUTING and filter FORWARD (the chains our jumps live in) and in chains of its own, and
  creates and deletes whole chains of its own;
- ``iptables-legacy-restore -w --noflush`` declares chains of its own (which flushes them, as
  kube-proxy relies on) and fills them, with jumps from the built-in chains;
- ``iptables`` (iptables-nft, the nf_tables front end: ``table ip nat`` / ``ip filter`` of nftables)
  does the same in nat and filter, and ``iptables-nft-restore --noflush`` batches as kube-proxy
  (iptables mode) sends them;
- ``nft -f`` batches change two nftables tables of its own, ``inet kube-proxy`` (kube-proxy's
  nftables mode: services as chains behind a verdict map, ClusterIPs in a set, rewritten chains,
  filter rules added and deleted by handle) and ``inet firewalld`` (set elements and rules).

From the start it also holds a "stranger": a masquerade chain of another network in the layout
the reference bridge plugin uses (``CNI-<hash>``, comment ``name: "othernet" id: "stranger"``),
that belongs to nobody in our records.

The writer keeps its own model of every rule it believes present, in order. At the end its model
must equal, chain by chain and in order, what ``iptables-legacy-save`` and ``iptables-nft-save``
show of it; its own nftables tables must be byte for byte what ``nft list table`` prints of the
model rebuilt from scratch in a namespace of its own; and it must not have seen a single command
fail (a failing ``-D`` or ``delete rule ... handle`` would mean a rule of its was lost). Every
container's CHECK passes while the writer runs (none of ours was lost), our rules are exactly the
50 containers' (their DNAT and masquerade chains, their firewall entries, nobody else's), every
hostPort answers, and after our DELs the legacy tables without the writer's rules are exactly the
baseline taken before the first ADD, the nftables ruleset holds the writer's tables and nothing of
ours.

The test runs once per backend of our plugins (``[iptables]``, ``[nftables]``); the writer does all
of the above in both, with more of its changes in nftables when ours are there too. Another test
shows that foreign nftables tables present before our first ADD (``inet kube-proxy``,
``inet firewalld``, and kube-proxy's iptables-nft rules in ``ip nat``/``ip filter``) come through a
full ADD/CHECK/DEL cycle of ours byte for byte.

A separate test shows our transactions get the xtables lock next to busy ``iptables -w`` users
(which block in flock and are handed the lock by the kernel) instead of starving behind them.
"""
from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import PYTHON, REPO, Node, node_env, ns_exec
from tests.test_resilience_common import BACKENDS, assert_on_backend, our_nft_tables, report, touch_tables
from tests.test_resilience_support import listeners  # noqa: F401 - a shared fixture
from tests.test_resilience_support import (
    CHAIN,
    CHAIN_NOTE,
    Cnictl,
    Container,
    Listeners,
    address_of,
    answers_from_outside,
    assert_restored,
    attached_problems,
    foreign_nft_listing,
    full_chain,
    in_parallel,
    install_conflist,
    install_foreign_nft_tables,
    lifecycle,
    make_containers,
    snapshot,
)

NETWORK = "rcnet"
BRIDGE = "rc0"
SUBNET = "10.88.0.0/24"
COUNT = 50
NEWCOMERS = 25  # full lifecycles run between the 50 DELs
SEED = 20240605  # the writer's choices are reproducible; only how many it makes depends on timing
MIN_OPS_PER_PHASE = 5
TAG = "rc-foreign:"
STRANGER = 'name: "othernet" id: "stranger"'
STRANGER_SAVED = STRANGER.replace('"', '\\"')  # as iptables-save prints it inside the quoted comment
STRANGER_CHAIN = "CNI-" + hashlib.sha512(b"othernetstranger").hexdigest()[:24]
FIGURES: list[str] = []

# --- the foreign writer ----------------------------------------------------------------------------
# It runs as its own process in the node namespace (``python -c "...run_writer(...)"``), stops when
# its stdin closes, and then prints its model and what it did as JSON. It bumps a counter file after
# every change so the test can tell that it really was writing during each phase.

BUILTIN = {"nat": ("PREROUTING", "POSTROUTING"), "filter": ("FORWARD",)}  # where our jumps live too
TOOLS = {"legacy": "iptables-legacy", "nft": "iptables"}
RESTORE = {"legacy": ["iptables-legacy-restore", "-w", "--noflush"], "nft": ["iptables-nft-restore", "--noflush"]}
# How the writer's changes are shared between iptables-legacy, iptables-nft and its own nftables
# tables: more of them on the side our plugins use.
SHARES = {"iptables": (0.55, 0.2, 0.25), "nftables": (0.2, 0.3, 0.5)}
KUBE_PROXY = "inet kube-proxy"
FIREWALLD = "inet firewalld"
MAX_OWN_CHAINS = 6

Args = list[str]


def save_text(args: Args) -> str:
    """Rule arguments as iptables-save prints them (the comment quoted, its quotes escaped)."""
    out = []
    for i, arg in enumerate(args):
        if i and args[i - 1] == "--comment":
            arg = '"' + arg.replace('"', '\\"') + '"'
        out.append(arg)
    return " ".join(out)


class Writer:
    """Another program on the node, changing nat and filter through the iptables tools.

    ``model[backend][table][chain]`` is every rule it believes present, in order, for the built-in
    chains it uses and for its own chains (``own``). Rules match only TEST-NET-3 (203.0.113.0/24)
    traffic, so they never change what the containers' packets do. A command that fails is kept in
    ``errors`` and leaves the model as it was.
    """

    def __init__(self, seed: int, backend: str) -> None:
        self.rng = random.Random(seed)
        self.shares = SHARES[backend]
        self.model: dict[str, dict[str, dict[str, list[Args]]]] = {
            backend: {table: {chain: [] for chain in chains} for table, chains in BUILTIN.items()}
            for backend in TOOLS}
        self.own: dict[str, dict[str, list[str]]] = {backend: {table: [] for table in BUILTIN} for backend in TOOLS}
        self.permanent: set[tuple[str, str]] = set()  # (table, chain) the writer never changes again
        self.counts = {"ops": 0, "legacy": 0, "legacy-restore": 0, "nft": 0, "nft-restore": 0, "nft-batches": 0,
                       "rules-added": 0, "rules-deleted": 0, "chains-created": 0, "chains-deleted": 0,
                       "elements-added": 0, "elements-deleted": 0}
        self.errors: list[dict[str, Any]] = []
        self.serial = 0
        self.native = NativeTables(self)

    # commands ------------------------------------------------------------------------------------

    def run(self, cmd: list[str], stdin: bytes | None = None) -> bool:
        return self.output(cmd, stdin) is not None

    def output(self, cmd: list[str], stdin: bytes | None = None) -> str | None:
        """The command's stdout, or None when it failed (kept in ``errors``)."""
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            self.errors.append({"cmd": " ".join(cmd), "stdin": (stdin or b"").decode(errors="replace")[-500:],
                                "rc": proc.returncode, "stderr": proc.stderr.decode(errors="replace")[-500:]})
            return None
        return proc.stdout.decode(errors="replace")

    def ipt(self, backend: str, table: str, *args: str) -> bool:
        self.counts[backend] += 1
        wait = ["-w"] if backend == "legacy" else []  # -w alone: a blocking flock on the xtables lock
        return self.run([TOOLS[backend], *wait, "-t", table, *args])

    def restore(self, table: str, declare: list[str], rules: list[tuple[str, str, Args]],
                backend: str = "legacy") -> bool:
        """One ``iptables-legacy-restore -w --noflush`` (or ``iptables-nft-restore --noflush``) batch:
        chains declared (and so flushed), then rules as (``-A``/``-I``, chain, args)."""
        lines = [f"*{table}"] + [f":{chain} - [0:0]" for chain in declare]
        lines += [f"{verb} {chain}{' 1' if verb == '-I' else ''} {save_text(args)}" for verb, chain, args in rules]
        self.counts[f"{backend}-restore"] += 1
        return self.run(RESTORE[backend], ("\n".join(lines + ["COMMIT", ""])).encode())

    # rules ---------------------------------------------------------------------------------------

    def rule(self, target: str) -> Args:
        """A new rule with a unique comment, in iptables-save's canonical argument order."""
        self.serial += 1
        note = ["-m", "comment", "--comment", f"{TAG}{self.serial}"]
        host = f"203.0.113.{self.rng.randrange(1, 250)}/32"
        other = f"203.0.113.{self.rng.randrange(1, 250)}"
        if target == "DNAT":
            return ["-d", host, "-p", "tcp", "-m", "tcp", "--dport", str(self.rng.randrange(1024, 60000)), *note,
                    "-j", "DNAT", "--to-destination", f"{other}:8080"]
        if target == "SNAT":
            return ["-s", host, *note, "-j", "SNAT", "--to-source", other]
        return [self.rng.choice(("-s", "-d")), host, *note, "-j", target]

    def leaf_target(self, table: str, chain: str) -> str:
        if chain not in BUILTIN[table]:
            return "RETURN"
        if table == "filter":
            return self.rng.choice(("ACCEPT", "DROP"))
        return self.rng.choice(("RETURN", "DNAT" if chain == "PREROUTING" else "SNAT"))

    def add_rule(self, backend: str, table: str, chain: str, target: str, at_top: bool) -> None:
        args = self.rule(target)
        position = ["1"] if at_top else []
        if self.ipt(backend, table, "-I" if at_top else "-A", chain, *position, *args):
            rules = self.model[backend][table][chain]
            rules.insert(0, args) if at_top else rules.append(args)
            self.counts["rules-added"] += 1

    def deletable_rules(self, backend: str) -> list[tuple[str, str, int]]:
        """Every rule but those in or jumping to a permanent chain, as (table, chain, index)."""
        permanent = {chain for _, chain in self.permanent}
        return [(table, chain, index) for table, chains in self.model[backend].items()
                for chain, rules in chains.items() if chain not in permanent
                for index, args in enumerate(rules) if args[-1] not in permanent]

    # operations ----------------------------------------------------------------------------------

    def op_add(self, backend: str) -> None:
        """A rule in a built-in chain (at the top or the end) or in an own chain, or a jump to one."""
        table = self.rng.choice(list(BUILTIN))
        own = [name for name in self.own[backend][table] if (table, name) not in self.permanent]
        chain = self.rng.choice([*BUILTIN[table], *own])
        top = chain in BUILTIN[table] and self.rng.random() < 0.5
        if chain in BUILTIN[table] and own and self.rng.random() < 0.3:  # (the stranger's MASQUERADE chain
            self.add_rule(backend, table, chain, self.rng.choice(own), top)  # is no jump target from PREROUTING)
        else:
            self.add_rule(backend, table, chain, self.leaf_target(table, chain), top)

    def op_new_chain(self, backend: str) -> None:
        table = self.rng.choice(list(BUILTIN))
        if len(self.own[backend][table]) >= MAX_OWN_CHAINS:
            return
        name = f"RCF-{backend[0].upper()}{table[0].upper()}-{self.serial + 1}"
        if self.ipt(backend, table, "-N", name):
            self.own[backend][table].append(name)
            self.model[backend][table][name] = []
            self.counts["chains-created"] += 1
            self.add_rule(backend, table, name, "RETURN", at_top=False)
            self.add_rule(backend, table, self.rng.choice(BUILTIN[table]), name, self.rng.random() < 0.5)

    def op_delete_rule(self, backend: str) -> None:
        candidates = self.deletable_rules(backend)
        if not candidates:
            return
        table, chain, index = self.rng.choice(candidates)
        if self.ipt(backend, table, "-D", chain, *self.model[backend][table][chain][index]):
            del self.model[backend][table][chain][index]
            self.counts["rules-deleted"] += 1

    def op_delete_chain(self, backend: str) -> None:
        """Its jumps first, then flush and delete, as a careful script would."""
        table = self.rng.choice(list(BUILTIN))
        names = [name for name in self.own[backend][table] if (table, name) not in self.permanent]
        if not names:
            return
        name = self.rng.choice(names)
        for chain, rules in self.model[backend][table].items():
            for args in [args for args in rules if args[-1] == name]:
                if self.ipt(backend, table, "-D", chain, *args):
                    rules.remove(args)
                    self.counts["rules-deleted"] += 1
        if self.ipt(backend, table, "-F", name) and self.ipt(backend, table, "-X", name):
            self.counts["rules-deleted"] += len(self.model[backend][table].pop(name))
            self.own[backend][table].remove(name)
            self.counts["chains-deleted"] += 1

    def op_restore(self, backend: str = "legacy") -> None:
        """kube-proxy style: declare a chain of its own (which flushes it if it exists), fill it, and
        for a new one insert a jump to it at the top of a built-in chain."""
        table = self.rng.choice(list(BUILTIN))
        existing = [name for name in self.own[backend][table] if (table, name) not in self.permanent]
        fresh = not existing or self.rng.random() < 0.5
        kind = "LR" if backend == "legacy" else "NR"
        name = f"RCF-{kind}{table[0].upper()}-{self.serial + 1}" if fresh else self.rng.choice(existing)
        body = [self.rule("RETURN") for _ in range(self.rng.randrange(1, 4))]
        jumps = [(self.rng.choice(BUILTIN[table]), self.rule(name))] if fresh else []
        batch = [("-A", name, args) for args in body] + [("-I", chain, args) for chain, args in jumps]
        if self.restore(table, [name], batch, backend):
            if fresh:
                self.own[backend][table].append(name)
                self.counts["chains-created"] += 1
            self.counts["rules-deleted"] += len(self.model[backend][table].get(name, []))
            self.model[backend][table][name] = body
            for chain, args in jumps:
                self.model[backend][table][chain].insert(0, args)
            self.counts["rules-added"] += len(body) + len(jumps)

    def add_stranger(self) -> None:
        """Another network's masquerade chain as the reference bridge plugin lays it out: a ``CNI-``
        chain that belongs to nobody in our records. Never changed again."""
        name = STRANGER_CHAIN
        note = ["-m", "comment", "--comment", STRANGER]
        body = [["-d", "10.99.0.0/24", *note, "-j", "ACCEPT"], ["!", "-d", "224.0.0.0/4", *note, "-j", "MASQUERADE"]]
        jump = ["-s", "10.99.0.5/32", *note, "-j", name]
        if self.restore("nat", [name], [("-A", name, args) for args in body] + [("-A", "POSTROUTING", jump)]):
            self.own["legacy"]["nat"].append(name)
            self.permanent.add(("nat", name))
            self.model["legacy"]["nat"][name] = body
            self.model["legacy"]["nat"]["POSTROUTING"].append(jump)

    def step(self) -> None:
        backend = self.rng.choices(("legacy", "nft", "native"), self.shares)[0]
        if backend == "native":
            self.native.step()
        elif self.rng.random() < 0.15:
            self.op_restore(backend)
        else:
            operation = self.rng.choices((self.op_add, self.op_delete_rule, self.op_new_chain, self.op_delete_chain),
                                         (6, 3, 1, 1))[0]
            operation(backend)
        self.counts["ops"] += 1

    def outcome(self) -> dict[str, Any]:
        return {"model": {backend: {table: {chain: [save_text(args) for args in rules] for chain, rules in chains.items()}
                                    for table, chains in tables.items()} for backend, tables in self.model.items()},
                "own": self.own, "counts": self.counts, "errors": self.errors,
                "native": {"tables": list(self.native.chains), "script": self.native.script(),
                           "services": len(self.native.services)}}


class NativeTables:
    """The writer's own nftables tables, changed the way kube-proxy (nftables mode) and firewalld do:
    ``nft -f`` batches that add and remove a service (its chain, its map and set elements) at once,
    rewrite a chain (flush and refill), add rules at either end and delete them by handle, add and
    delete set elements.

    The model is what ``nft list`` shows, in creation order: ``sets[table][name] = [declaration,
    elements]``, ``chains[table][name] = [declaration, [[handle, rule], ...]]`` (handle None: a rule
    never deleted one by one). :meth:`script` builds the same tables from nothing.
    """

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.headers = {KUBE_PROXY: 'comment "rules for kube-proxy";', FIREWALLD: ""}
        self.sets: dict[str, dict[str, list[Any]]] = {
            KUBE_PROXY: {"cluster-ips": ['type ipv4_addr; comment "Active ClusterIPs";', []],
                         "service-ips": ["type ipv4_addr . inet_proto . inet_service : verdict; "
                                         'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic";', []]},
            FIREWALLD: {"allowed-sources": ["type ipv4_addr;", ["203.0.113.200"]]}}
        fixed = lambda *rules: [[None, rule] for rule in rules]  # noqa: E731
        self.chains: dict[str, dict[str, list[Any]]] = {
            KUBE_PROXY: {
                "mark-for-masquerade": ["", fixed("meta mark set meta mark | 0x00004000")],
                "masquerading": ["", fixed("meta mark & 0x00004000 == 0 return", "meta mark set meta mark ^ 0x00004000",
                                           "masquerade fully-random")],
                "services": ["", fixed("ip daddr . meta l4proto . th dport vmap @service-ips")],
                "nat-prerouting": ["type nat hook prerouting priority dstnat; policy accept;",
                                   fixed("ip daddr 203.0.113.0/24 jump services")],
                "nat-output": ["type nat hook output priority -100; policy accept;",
                               fixed("ip daddr 203.0.113.0/24 jump services")],
                "nat-postrouting": ["type nat hook postrouting priority srcnat; policy accept;",
                                    fixed("ip daddr 203.0.113.0/24 jump masquerading")],
                "filter-forward": ["type filter hook forward priority -110; policy accept;",
                                   fixed("ip daddr 203.0.113.0/24 jump firewall-check")],
                "firewall-check": ["", fixed("ip daddr 203.0.113.99 tcp dport 9999 drop")]},
            FIREWALLD: {
                "filter_INPUT": ["type filter hook input priority filter + 10; policy accept;",
                                 fixed("ip saddr 203.0.113.0/24 jump filter_IN_public")],
                "filter_FORWARD": ["type filter hook forward priority filter + 10; policy accept;",
                                   fixed("ip saddr 203.0.113.0/24 jump filter_IN_public")],
                "filter_IN_public": ["", fixed("ip saddr @allowed-sources accept", "jump filter_IN_public_allow")],
                "filter_IN_public_allow": ["", fixed("tcp dport 22 accept")]}}
        self.services: dict[str, tuple[str, str]] = {}  # chain -> (ClusterIP, its map key)

    def script(self) -> str:
        """An ``nft -f`` script that makes the tables as the model has them (sets and chains in
        creation order, then the rules, then the elements)."""
        lines = []
        for table, header in self.headers.items():
            lines.append(f"add table {table} {{ {header} }}")
            for name, (declaration, _) in self.sets[table].items():
                kind = "map" if " : " in declaration.split(";")[0] else "set"
                lines.append(f"add {kind} {table} {name} {{ {declaration} }}")
            for name, (declaration, _) in self.chains[table].items():
                lines.append(f"add chain {table} {name}" + (f" {{ {declaration} }}" if declaration else ""))
            for name, (_, rules) in self.chains[table].items():
                lines += [f"add rule {table} {name} {rule}" for _, rule in rules]
            for name, (_, elements) in self.sets[table].items():
                if elements:
                    lines.append(f"add element {table} {name} {{ {', '.join(elements)} }}")
        return "\n".join(lines) + "\n"

    def batch(self, *commands: str) -> bool:
        self.writer.counts["nft-batches"] += 1
        return self.writer.run(["nft", "-f", "-"], ("\n".join(commands) + "\n").encode())

    def free_address(self, first: int, last: int, taken: list[str]) -> str | None:
        free = [f"203.0.113.{i}" for i in range(first, last) if f"203.0.113.{i}" not in taken]
        return self.writer.rng.choice(free) if free else None

    # kube-proxy ------------------------------------------------------------------------------------

    def endpoint_rules(self, protocol: str) -> list[str]:
        endpoint = f"203.0.113.{self.writer.rng.randrange(1, 99)}:{self.writer.rng.randrange(1024, 60000)}"
        return ["ip saddr != 203.0.113.0/24 jump mark-for-masquerade", f"meta l4proto {protocol} dnat ip to {endpoint}"]

    def add_service(self) -> None:
        address = self.free_address(100, 200, [ip for ip, _ in self.services.values()])
        if address is None or len(self.services) >= 40:
            return
        self.writer.serial += 1
        name, protocol = f"service-{self.writer.serial}", self.writer.rng.choice(("tcp", "udp"))
        key = f"{address} . {protocol} . {self.writer.rng.randrange(1, 65535)}"
        rules = self.endpoint_rules(protocol)
        if self.batch(f"add chain {KUBE_PROXY} {name}", *[f"add rule {KUBE_PROXY} {name} {rule}" for rule in rules],
                      f"add element {KUBE_PROXY} cluster-ips {{ {address} }}",
                      f"add element {KUBE_PROXY} service-ips {{ {key} : goto {name} }}"):
            self.chains[KUBE_PROXY][name] = ["", [[None, rule] for rule in rules]]
            self.sets[KUBE_PROXY]["cluster-ips"][1].append(address)
            self.sets[KUBE_PROXY]["service-ips"][1].append(f"{key} : goto {name}")
            self.services[name] = (address, key)
            self.writer.counts["chains-created"] += 1
            self.writer.counts["rules-added"] += len(rules)
            self.writer.counts["elements-added"] += 2

    def delete_service(self) -> None:
        if not self.services:
            return
        name = self.writer.rng.choice(sorted(self.services))
        address, key = self.services[name]
        if self.batch(f"delete element {KUBE_PROXY} service-ips {{ {key} }}",
                      f"delete element {KUBE_PROXY} cluster-ips {{ {address} }}",
                      f"flush chain {KUBE_PROXY} {name}", f"delete chain {KUBE_PROXY} {name}"):
            self.writer.counts["rules-deleted"] += len(self.chains[KUBE_PROXY].pop(name)[1])
            self.sets[KUBE_PROXY]["cluster-ips"][1].remove(address)
            self.sets[KUBE_PROXY]["service-ips"][1].remove(f"{key} : goto {name}")
            del self.services[name]
            self.writer.counts["chains-deleted"] += 1
            self.writer.counts["elements-deleted"] += 2

    def rewrite_service(self) -> None:
        """New endpoints: kube-proxy flushes the service's chain and refills it in the same batch."""
        if not self.services:
            return
        name = self.writer.rng.choice(sorted(self.services))
        protocol = self.services[name][1].split(" . ")[1]
        rules = self.endpoint_rules(protocol)
        if self.batch(f"flush chain {KUBE_PROXY} {name}", *[f"add rule {KUBE_PROXY} {name} {rule}" for rule in rules]):
            self.writer.counts["rules-deleted"] += len(self.chains[KUBE_PROXY][name][1])
            self.chains[KUBE_PROXY][name][1] = [[None, rule] for rule in rules]
            self.writer.counts["rules-added"] += len(rules)

    # rules by handle, elements (both tables) ----------------------------------------------------------

    def add_rule(self, table: str, chain: str, verdict: str) -> None:
        """``nft --echo --handle add|insert rule``: the handle it printed is how the rule is deleted later."""
        rng = self.writer.rng
        rule = f"ip daddr 203.0.113.{rng.randrange(1, 250)} tcp dport {rng.randrange(1024, 60000)} {verdict}"
        at_top = rng.random() < 0.5
        out = self.writer.output(["nft", "--echo", "--handle", "insert" if at_top else "add", "rule", *table.split(),
                                  chain, *rule.split()])
        self.writer.counts["nft-batches"] += 1
        if out is None:
            return
        found = re.search(r"# handle (\d+)", out)
        if found is None:
            self.writer.errors.append({"cmd": f"add rule {table} {chain} {rule}", "stderr": f"no handle in {out!r}"})
            return
        rules = self.chains[table][chain][1]
        entry = [int(found.group(1)), rule]
        rules.insert(0, entry) if at_top else rules.append(entry)
        self.writer.counts["rules-added"] += 1

    def delete_rule(self) -> None:
        candidates = [(table, chain, entry) for table in self.chains for chain, (_, rules) in self.chains[table].items()
                      for entry in rules if entry[0] is not None]
        if not candidates:
            return
        table, chain, entry = self.writer.rng.choice(candidates)
        if self.batch(f"delete rule {table} {chain} handle {entry[0]}"):
            self.chains[table][chain][1].remove(entry)
            self.writer.counts["rules-deleted"] += 1

    def add_source(self) -> None:
        elements = self.sets[FIREWALLD]["allowed-sources"][1]
        address = self.free_address(200, 250, elements)
        if address is not None and self.batch(f"add element {FIREWALLD} allowed-sources {{ {address} }}"):
            elements.append(address)
            self.writer.counts["elements-added"] += 1

    def delete_source(self) -> None:
        elements = self.sets[FIREWALLD]["allowed-sources"][1]
        if elements:
            address = self.writer.rng.choice(elements)
            if self.batch(f"delete element {FIREWALLD} allowed-sources {{ {address} }}"):
                elements.remove(address)
                self.writer.counts["elements-deleted"] += 1

    def step(self) -> None:
        operations = [
            (4, self.add_service), (2, self.delete_service), (2, self.rewrite_service),
            (2, lambda: self.add_rule(KUBE_PROXY, "firewall-check", "drop")),
            (2, lambda: self.add_rule(FIREWALLD, "filter_IN_public_allow", "accept")),
            (3, self.delete_rule), (2, self.add_source), (1, self.delete_source)]
        self.writer.rng.choices([op for _, op in operations], [weight for weight, _ in operations])[0]()


def write_counter(path: str, value: int) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(value))
    os.replace(path + ".tmp", path)  # the test never reads a half-written number


def run_writer(seed: int, counter_path: str, backend: str) -> None:
    """The writer process's main: change the tables until stdin closes, then print the outcome."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    writer = Writer(seed, backend)
    writer.add_stranger()
    writer.native.batch(writer.native.script())  # its nftables tables, before any change
    while not stop.is_set():
        writer.step()
        write_counter(counter_path, writer.counts["ops"])
        time.sleep(writer.rng.uniform(0.005, 0.03))
    print(json.dumps(writer.outcome()))


class ForeignWriter:
    """The writer process, seen from the test; :meth:`stop` returns its final model and counts."""

    def __init__(self, node: Node, backend: str) -> None:
        self.counter_path = os.path.join(node.work, "foreign-ops")
        code = ("from tests.test_resilience_coexistence import run_writer; "
                f"run_writer({SEED}, {self.counter_path!r}, {backend!r})")
        self.proc = subprocess.Popen(["ip", "netns", "exec", node.ns, PYTHON, "-c", code], cwd=REPO,
                                     env=dict(os.environ, PYTHONPATH=REPO), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ops(self) -> int:
        try:
            with open(self.counter_path) as f:
                return int(f.read() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def wait_for_ops(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.ops() < count:
            assert self.proc.poll() is None, f"foreign writer died: {self.proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"foreign writer made only {self.ops()} changes in {timeout}s"
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        out, err = self.proc.communicate(input=b"", timeout=180)
        assert self.proc.returncode == 0, f"foreign writer failed: {err.decode(errors='replace')}"
        result: dict[str, Any] = json.loads(out)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --- reading the writer's rules back ---------------------------------------------------------------

def parse_save(text: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save output as {table: {chain: [rule text after "-A chain "]}}, chains declared included."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            chain, _, rest = line[3:].partition(" ")
            current.setdefault(chain, []).append(rest)
    return tables


def foreign_view(saved: dict[str, dict[str, list[str]]], own: dict[str, list[str]],
                 tables: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """The writer's part of saved tables: its own chains whole, and its rules in the others."""
    view: dict[str, dict[str, list[str]]] = {}
    for table in tables:
        chains = saved.get(table, {})
        view[table] = {}
        for chain in sorted(set(chains) | set(tables[table])):
            if chain in own.get(table, []):
                view[table][chain] = chains[chain] if chain in chains else ["<chain missing>"]
            else:
                view[table][chain] = [rule for rule in chains.get(chain, []) if TAG in rule or STRANGER_SAVED in rule]
    return view


def model_view(model: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    return {table: {chain: list(rules) for chain, rules in sorted(chains.items())} for table, chains in model.items()}


def differences(expected: dict[str, dict[str, list[str]]], actual: dict[str, dict[str, list[str]]]) -> list[str]:
    out = []
    for table in sorted(expected):
        for chain in sorted(set(expected[table]) | set(actual.get(table, {}))):
            want, got = expected[table].get(chain, []), actual.get(table, {}).get(chain, [])
            if want != got:
                missing = [r for r in want if r not in got]
                extra = [r for r in got if r not in want]
                out.append(f"{table}/{chain}: missing {missing} unexpected {extra}"
                           + (" (order differs)" if not missing and not extra else ""))
    return out


def without_foreign(saved_text: str, own: dict[str, list[str]]) -> str:
    """iptables-save output with every line of the writer taken out."""
    chains = {name for names in own.values() for name in names}
    kept = []
    for line in saved_text.splitlines():
        if line.startswith(":") and line[1:].split(" ", 1)[0] in chains:
            continue
        if line.startswith("-A ") and (line[3:].split(" ", 1)[0] in chains or TAG in line
                                       or STRANGER_SAVED in line):
            continue
        kept.append(line)
    return "\n".join(kept)


def rule_count(model: dict[str, dict[str, list[str]]]) -> int:
    return sum(len(rules) for chains in model.values() for rules in chains.values())


def native_problems(node: Node, native: dict[str, Any]) -> list[str]:
    """Where the writer's nftables tables differ from its model: each as ``nft list table`` prints it
    on the node, against the same for the model built from nothing in a namespace of its own."""
    scratch = node.namespaces.add("scratch")
    try:
        ns_exec(scratch, "nft", "-f", "-", input=native["script"].encode())
        problems = []
        for table in native["tables"]:
            expected = ns_exec(scratch, "nft", "list", "table", *table.split()).stdout.decode()
            actual = node.exec("nft", "--stateless", "list", "table", *table.split(), check=False).stdout.decode()
            if actual != expected:
                problems += [f"{table}: {line}" for line in difflib.unified_diff(
                    expected.splitlines(), actual.splitlines(), "model", "node", lineterm="", n=1)]
        return problems
    finally:
        node.namespaces.remove(scratch)


# --- the test --------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report(request.config, f"resilience-coexistence: {COUNT} containers, chain {CHAIN_NOTE}, "
                           "next to a foreign iptables-legacy / iptables-legacy-restore / iptables-nft writer",
           FIGURES)


@pytest.fixture(params=BACKENDS)
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    with node_env("rc") as n:
        touch_tables(n)
        n.backend = request.param
        install_conflist(n, full_chain(n, NETWORK, BRIDGE, SUBNET, backend=request.param))
        yield n


@pytest.mark.root
def test_50_parallel_lifecycles_then_dels_interleaved_with_25_more_next_to_a_foreign_writer_lose_nothing(
        node: Node, listeners: Listeners) -> None:
    containers = make_containers(node, "c", COUNT, 22000)
    newcomers = make_containers(node, "n", NEWCOMERS, 22500)
    for ctr in containers + newcomers:
        listeners.listen(ctr)
    runtime = Cnictl(node, NETWORK)
    # the 50 DELs with a newcomer's whole lifecycle after every second one
    mixed: list[tuple[str, Container]] = [("del", ctr) for ctr in containers]
    for index, ctr in enumerate(newcomers):
        mixed.insert(3 * index + 2, ("lifecycle", ctr))

    def delete_or_live(item: tuple[str, Container]) -> str | None:
        kind, ctr = item
        return lifecycle(node, runtime, ctr) if kind == "lifecycle" else runtime.delete(ctr)

    before = snapshot(node, NETWORK)
    writer = ForeignWriter(node, node.backend)
    try:
        writer.wait_for_ops(20)  # it already holds rules everywhere before our first ADD
        marks = [writer.ops()]
        adds = in_parallel("ADDs", runtime.add, containers)
        marks.append(writer.ops())
        checks = in_parallel("CHECKs", runtime.check, containers)  # none of ours lost so far
        assert_on_backend(node, node.backend, CHAIN, others=[STRANGER_CHAIN])
        ours = attached_problems(node, NETWORK, node.backend, containers,
                                 {ctr.ns: address_of(result) for ctr, result in zip(containers, adds.results)},
                                 SUBNET, others=[STRANGER_CHAIN])
        assert not ours, "our rules are not exactly the 50 containers':\n" + "\n".join(ours[:50])
        traffic = answers_from_outside(node, containers)
        marks.append(writer.ops())
        churn = in_parallel(f"operations ({COUNT} DELs interleaved with {NEWCOMERS} ADD-CHECK-traffic-DEL "
                            "lifecycles)", delete_or_live, mixed)
        marks.append(writer.ops())
        outcome = writer.stop()
    finally:
        writer.kill()
    during = [later - earlier for earlier, later in zip(marks, marks[1:])]
    assert min(during) >= MIN_OPS_PER_PHASE, f"the writer barely ran during ADD / CHECK / DEL: {during} changes"
    assert outcome["errors"] == [], f"{len(outcome['errors'])} foreign commands failed: {outcome['errors'][:10]}"
    addresses = {address_of(result) for result in adds.results} | {a for a in churn.results if a}
    assert len(addresses) == COUNT + NEWCOMERS, "addresses handed out twice"

    legacy = parse_save(node.exec("iptables-legacy-save").stdout.decode())
    nft_text = node.exec("iptables-nft-save").stdout.decode()
    expected_legacy, expected_nft = model_view(outcome["model"]["legacy"]), model_view(outcome["model"]["nft"])
    problems = differences(expected_legacy, foreign_view(legacy, outcome["own"]["legacy"], expected_legacy))
    problems += differences(expected_nft, foreign_view(parse_save(nft_text), outcome["own"]["nft"], expected_nft))
    assert not problems, f"foreign rules lost or changed ({len(problems)} chains):\n" + "\n".join(problems)
    native = native_problems(node, outcome["native"])
    assert not native, "the writer's nftables tables are not what it wrote:\n" + "\n".join(native[:80])
    # the comparison can fail: the model without its last command is not what the node holds
    shortened = outcome["native"]["script"].rstrip("\n").rsplit("\n", 1)[0] + "\n"
    assert native_problems(node, dict(outcome["native"], script=shortened)), "the native tables' check is blind"

    after = snapshot(node, NETWORK)
    after["tables"] = {name: without_foreign(text, outcome["own"]["legacy"]) for name, text in after["tables"].items()}
    ruleset = after.pop("nft")
    nft_tables = sorted(line for line in ruleset.splitlines() if line.startswith("table "))
    assert_restored(dict(before, nft=None), dict(after, nft=None), BRIDGE)
    # nftables: the writer's own tables (iptables-nft's and its native ones) and nothing of ours; without
    # the writer's rules, iptables-nft's tables hold bare built-in chains
    assert set(nft_tables) <= {"table ip filter {", "table ip nat {", "table inet kube-proxy {",
                               "table inet firewalld {"}, nft_tables
    assert before["nft"] == "" and our_nft_tables(ruleset) == {}, sorted(our_nft_tables(ruleset))
    assert attached_problems(node, NETWORK, node.backend, [], {}, SUBNET, others=[STRANGER_CHAIN]) == []
    assert [line for line in without_foreign(nft_text, outcome["own"]["nft"]).splitlines()
            if line.startswith("-A ")] == []
    counts = outcome["counts"]
    FIGURES.append(f"[{node.backend}] {adds.line()}; {checks.line()}; {traffic.line()}; {churn.line()}")
    FIGURES.append(
        f"[{node.backend}] foreign writer: {counts['ops']} changes ({during[0]} during ADDs, {during[1]} during "
        f"CHECKs+traffic, {during[2]} during DELs+lifecycles): {counts['legacy']} iptables-legacy, "
        f"{counts['legacy-restore']} iptables-legacy-restore --noflush, {counts['nft']} iptables-nft, "
        f"{counts['nft-restore']} iptables-nft-restore --noflush, {counts['nft-batches']} nft commands/batches "
        f"on its own tables; {counts['rules-added']} rules added, {counts['rules-deleted']} deleted, "
        f"{counts['chains-created']} chains created, {counts['chains-deleted']} deleted, "
        f"{counts['elements-added']} set/map elements added, {counts['elements-deleted']} deleted; "
        "0 commands failed")
    FIGURES.append(f"[{node.backend}] {rule_count(expected_legacy) + rule_count(expected_nft)} foreign iptables "
                   f"rules present at the end ({rule_count(expected_legacy)} legacy incl. the stranger's 3, "
                   f"{rule_count(expected_nft)} iptables-nft), all in place and in order; inet kube-proxy "
                   f"({outcome['native']['services']} services) and inet firewalld byte for byte as written; "
                   "our rules exactly the 50 containers' while attached, back to the baseline after")


# kube-proxy in iptables mode on an iptables-nft node: its rules in nftables' ip nat / ip filter
KUBE_PROXY_IPTABLES_NFT = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-RCTEST - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d 203.0.113.30/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-RCTEST
-A KUBE-SVC-RCTEST -p tcp -m tcp -j DNAT --to-destination 203.0.113.31:8080
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -d 203.0.113.0/24 -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"""


def foreign_state(node: Node) -> dict[str, str]:
    """nft's listing of every table of another program: native ones, and iptables-nft's ip nat / filter."""
    out = foreign_nft_listing(node)
    for table in ("nat", "filter"):
        out[f"ip {table}"] = node.exec("nft", "--stateless", "list", "table", "ip", table).stdout.decode()
    return out


@pytest.mark.root
def test_foreign_nftables_tables_from_before_come_through_add_check_del_byte_for_byte(
        node: Node, listeners: Listeners) -> None:
    install_foreign_nft_tables(node)
    node.exec("iptables-nft-restore", "--noflush", input=KUBE_PROXY_IPTABLES_NFT.encode())
    foreign = foreign_state(node)
    assert all(foreign.values()) and "KUBE-SVC-RCTEST" in foreign["ip nat"], foreign
    before = snapshot(node, NETWORK)
    containers = make_containers(node, "p", 6, 22700)
    for ctr in containers:
        listeners.listen(ctr)
    runtime = Cnictl(node, NETWORK)

    adds = in_parallel("ADDs", runtime.add, containers)
    assert_on_backend(node, node.backend, CHAIN)
    ours = attached_problems(node, NETWORK, node.backend, containers,
                             {ctr.ns: address_of(result) for ctr, result in zip(containers, adds.results)}, SUBNET)
    assert not ours, "\n".join(ours)
    assert foreign_state(node) == foreign, "another program's table changed by our ADDs"
    in_parallel("CHECKs", runtime.check, containers)
    answers_from_outside(node, containers)
    in_parallel("DELs", runtime.delete, containers)

    assert foreign_state(node) == foreign, "another program's table changed by our DELs"
    assert_restored(before, snapshot(node, NETWORK), BRIDGE)  # the whole ruleset too, byte for byte
    FIGURES.append(f"[{node.backend}] inet kube-proxy, inet firewalld and kube-proxy's iptables-nft ip nat / "
                   f"ip filter from before: byte for byte the same while {len(containers)} containers were "
                   "attached and after their DELs")


# --- the xtables lock next to busy `iptables -w` users ----------------------------------------------

LOCK_USERS = 2
LOCK_WAITERS = 8
LOCK_ROUNDS = 10
LOCK_WAIT = 5.0


def busy_lock_user(path: str, until: float) -> None:
    """What ``iptables -w`` does in a loop: block in flock, hold the lock briefly, let go."""
    while time.time() < until:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            time.sleep(0.015)
        finally:
            os.close(fd)
        time.sleep(0.005)


def lock_waiter(path: str, waits: "multiprocessing.Queue[list[float]]") -> None:
    """A plugin's transactions: take our xtables lock (in the main thread, as a plugin does)."""
    os.environ["XTABLES_LOCKFILE"] = path
    from chains.errors import LockTimeout  # noqa: PLC0415
    from chains.lock import xtables_lock  # noqa: PLC0415

    taken = []
    for _ in range(LOCK_ROUNDS):
        started = time.monotonic()
        try:
            with xtables_lock(wait=LOCK_WAIT):
                taken.append(time.monotonic() - started)
                time.sleep(0.02)
        except LockTimeout:
            taken.append(float("inf"))
        time.sleep(0.01)
    waits.put(taken)


def test_8_plugins_get_the_xtables_lock_next_to_2_busy_iptables_w_users(tmp_path: Any) -> None:
    """The lock is hardly ever free between two ``iptables -w`` loops: the kernel hands it from one
    blocked waiter to the next. Our transactions must queue for it the same way instead of polling
    past it until they give up (with polling, about 1 in 10 waits ran into the timeout here)."""
    path = str(tmp_path / "xtables.lock")
    until = time.time() + 60
    users = [multiprocessing.Process(target=busy_lock_user, args=(path, until)) for _ in range(LOCK_USERS)]
    waits: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    waiters = [multiprocessing.Process(target=lock_waiter, args=(path, waits)) for _ in range(LOCK_WAITERS)]
    try:
        for process in users + waiters:
            process.start()
        taken = sorted(wait for _ in waiters for wait in waits.get(timeout=120))
    finally:
        for process in users + waiters:
            process.kill()
            process.join()
    timeouts = sum(1 for wait in taken if wait == float("inf"))
    assert timeouts == 0, f"{timeouts} of {len(taken)} lock waits gave up after {LOCK_WAIT}s next to " \
                          f"{LOCK_USERS} busy iptables -w users"
    FIGURES.append(f"xtables lock: {len(taken)} waits by {LOCK_WAITERS} plugins next to {LOCK_USERS} busy "
                   f"`iptables -w` users, 0 timeouts, longest {taken[-1]:.2f}s")
