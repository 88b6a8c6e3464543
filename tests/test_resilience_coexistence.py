"""Our plugins and another program rewriting the same tables at the same time lose nothing of each other.

While 50 containers go through the whole chain in parallel (ADD, CHECK, traffic, then DEL interleaved
with the whole lifecycles of 25 more, 16 operations at a time, each a ``cnictl`` process), a foreign
writer in the node namespace keeps changing the very tables we use:

- ``iptables-legacy -w`` appends, inserts at the top of and deletes rules in nat PREROUTING /
  POSTROUTING and filter FORWARD (the chains our jumps live in) and in chains of its own, and
  creates and deletes whole chains of its own;
- ``iptables-legacy-restore -w --noflush`` declares chains of its own (which flushes them, as
  kube-proxy relies on) and fills them, with jumps from the built-in chains;
- ``iptables`` (the nf_tables front end: a separate ruleset) does the same in nat and filter.

From the start it also holds a "stranger": a masquerade chain of another network in the layout
the reference bridge plugin uses (``CNI-<hash>``, comment ``name: "othernet" id: "stranger"``),
that belongs to nobody in our records.

The writer keeps its own model of every rule it believes present, in order. At the end its model
must equal, chain by chain and in order, what ``iptables-legacy-save`` and ``iptables-nft-save``
show of it, and it must not have seen a single command fail (a failing ``-D`` would mean a rule of
its was lost). Every container's CHECK passes while the writer runs (none of ours was lost), every
hostPort answers, and after our DELs the legacy tables without the writer's rules are exactly the
baseline taken before the first ADD (and the nftables ruleset without them is too).

A separate test shows our transactions get the xtables lock next to busy ``iptables -w`` users
(which block in flock and are handed the lock by the kernel) instead of starving behind them.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.netenv import PYTHON, REPO, Node, node_env
from tests.test_resilience_common import report, touch_tables
from tests.test_resilience_support import listeners  # noqa: F401 - a shared fixture
from tests.test_resilience_support import (
    CHAIN_NOTE,
    Cnictl,
    Container,
    Listeners,
    address_of,
    answers_from_outside,
    assert_restored,
    full_chain,
    in_parallel,
    install_conflist,
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
FIGURES: list[str] = []

# --- the foreign writer ----------------------------------------------------------------------------
# It runs as its own process in the node namespace (``python -c "...run_writer(...)"``), stops when
# its stdin closes, and then prints its model and what it did as JSON. It bumps a counter file after
# every change so the test can tell that it really was writing during each phase.

BUILTIN = {"nat": ("PREROUTING", "POSTROUTING"), "filter": ("FORWARD",)}  # where our jumps live too
TOOLS = {"legacy": "iptables-legacy", "nft": "iptables"}
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

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.model: dict[str, dict[str, dict[str, list[Args]]]] = {
            backend: {table: {chain: [] for chain in chains} for table, chains in BUILTIN.items()}
            for backend in TOOLS}
        self.own: dict[str, dict[str, list[str]]] = {backend: {table: [] for table in BUILTIN} for backend in TOOLS}
        self.permanent: set[tuple[str, str]] = set()  # (table, chain) the writer never changes again
        self.counts = {"ops": 0, "legacy": 0, "legacy-restore": 0, "nft": 0, "rules-added": 0, "rules-deleted": 0,
                       "chains-created": 0, "chains-deleted": 0}
        self.errors: list[dict[str, Any]] = []
        self.serial = 0

    # commands ------------------------------------------------------------------------------------

    def run(self, cmd: list[str], stdin: bytes | None = None) -> bool:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            self.errors.append({"cmd": " ".join(cmd), "rc": proc.returncode,
                                "stderr": proc.stderr.decode(errors="replace")[-500:]})
        return proc.returncode == 0

    def ipt(self, backend: str, table: str, *args: str) -> bool:
        self.counts[backend] += 1
        wait = ["-w"] if backend == "legacy" else []  # -w alone: a blocking flock on the xtables lock
        return self.run([TOOLS[backend], *wait, "-t", table, *args])

    def restore(self, table: str, declare: list[str], rules: list[tuple[str, str, Args]]) -> bool:
        """One ``iptables-legacy-restore -w --noflush`` batch: chains declared (and so flushed), then
        rules as (``-A``/``-I``, chain, args)."""
        lines = [f"*{table}"] + [f":{chain} - [0:0]" for chain in declare]
        lines += [f"{verb} {chain}{' 1' if verb == '-I' else ''} {save_text(args)}" for verb, chain, args in rules]
        self.counts["legacy-restore"] += 1
        return self.run(["iptables-legacy-restore", "-w", "--noflush"], ("\n".join(lines + ["COMMIT", ""])).encode())

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
        own = self.own[backend][table]
        chain = self.rng.choice([*BUILTIN[table], *own])
        top = chain in BUILTIN[table] and self.rng.random() < 0.5
        if chain in BUILTIN[table] and own and self.rng.random() < 0.3:
            self.add_rule(backend, table, chain, self.rng.choice(own), top)
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

    def op_restore(self) -> None:
        """kube-proxy style: declare a chain of its own (which flushes it if it exists), fill it, and
        for a new one insert a jump to it at the top of a built-in chain."""
        table = self.rng.choice(list(BUILTIN))
        existing = [name for name in self.own["legacy"][table] if (table, name) not in self.permanent]
        fresh = not existing or self.rng.random() < 0.5
        name = f"RCF-LR{table[0].upper()}-{self.serial + 1}" if fresh else self.rng.choice(existing)
        body = [self.rule("RETURN") for _ in range(self.rng.randrange(1, 4))]
        jumps = [(self.rng.choice(BUILTIN[table]), self.rule(name))] if fresh else []
        batch = [("-A", name, args) for args in body] + [("-I", chain, args) for chain, args in jumps]
        if self.restore(table, [name], batch):
            if fresh:
                self.own["legacy"][table].append(name)
                self.counts["chains-created"] += 1
            self.counts["rules-deleted"] += len(self.model["legacy"][table].get(name, []))
            self.model["legacy"][table][name] = body
            for chain, args in jumps:
                self.model["legacy"][table][chain].insert(0, args)
            self.counts["rules-added"] += len(body) + len(jumps)

    def add_stranger(self) -> None:
        """Another network's masquerade chain as the reference bridge plugin lays it out: a ``CNI-``
        chain that belongs to nobody in our records. Never changed again."""
        name = "CNI-" + hashlib.sha512(b"othernetstranger").hexdigest()[:24]
        note = ["-m", "comment", "--comment", STRANGER]
        body = [["-d", "10.99.0.0/24", *note, "-j", "ACCEPT"], ["!", "-d", "224.0.0.0/4", *note, "-j", "MASQUERADE"]]
        jump = ["-s", "10.99.0.5/32", *note, "-j", name]
        if self.restore("nat", [name], [("-A", name, args) for args in body] + [("-A", "POSTROUTING", jump)]):
            self.own["legacy"]["nat"].append(name)
            self.permanent.add(("nat", name))
            self.model["legacy"]["nat"][name] = body
            self.model["legacy"]["nat"]["POSTROUTING"].append(jump)

    def step(self) -> None:
        backend = "legacy" if self.rng.random() < 0.7 else "nft"
        if backend == "legacy" and self.rng.random() < 0.15:
            self.op_restore()
        else:
            operation = self.rng.choices((self.op_add, self.op_delete_rule, self.op_new_chain, self.op_delete_chain),
                                         (6, 3, 1, 1))[0]
            operation(backend)
        self.counts["ops"] += 1

    def outcome(self) -> dict[str, Any]:
        return {"model": {backend: {table: {chain: [save_text(args) for args in rules] for chain, rules in chains.items()}
                                    for table, chains in tables.items()} for backend, tables in self.model.items()},
                "own": self.own, "counts": self.counts, "errors": self.errors}


def write_counter(path: str, value: int) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(value))
    os.replace(path + ".tmp", path)  # the test never reads a half-written number


def run_writer(seed: int, counter_path: str) -> None:
    """The writer process's main: change the tables until stdin closes, then print the outcome."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    writer = Writer(seed)
    writer.add_stranger()
    while not stop.is_set():
        writer.step()
        write_counter(counter_path, writer.counts["ops"])
        time.sleep(writer.rng.uniform(0.005, 0.03))
    print(json.dumps(writer.outcome()))


class ForeignWriter:
    """The writer process, seen from the test; :meth:`stop` returns its final model and counts."""

    def __init__(self, node: Node) -> None:
        self.counter_path = os.path.join(node.work, "foreign-ops")
        code = f"from tests.test_resilience_coexistence import run_writer; run_writer({SEED}, {self.counter_path!r})"
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


# --- the test --------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report(request.config, f"resilience-coexistence: {COUNT} containers, chain {CHAIN_NOTE}, "
                           "next to a foreign iptables-legacy / iptables-legacy-restore / iptables-nft writer",
           FIGURES)


@pytest.fixture
def node() -> Iterator[Node]:
    with node_env("rc") as n:
        touch_tables(n)
        install_conflist(n, full_chain(n, NETWORK, BRIDGE, SUBNET))
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
    writer = ForeignWriter(node)
    try:
        writer.wait_for_ops(20)  # it already holds rules everywhere before our first ADD
        marks = [writer.ops()]
        adds = in_parallel("ADDs", runtime.add, containers)
        marks.append(writer.ops())
        checks = in_parallel("CHECKs", runtime.check, containers)  # none of ours lost so far
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

    after = snapshot(node, NETWORK)
    after["tables"] = {name: without_foreign(text, outcome["own"]["legacy"]) for name, text in after["tables"].items()}
    nft_tables = sorted(line for line in after.pop("nft").splitlines() if line.startswith("table "))
    assert_restored(dict(before, nft=None), dict(after, nft=None), BRIDGE)
    # nftables: the writer's own tables and nothing else; without its rules, bare built-in chains
    assert set(nft_tables) <= {"table ip filter {", "table ip nat {"}, nft_tables
    assert [line for line in without_foreign(nft_text, outcome["own"]["nft"]).splitlines()
            if line.startswith("-A ")] == []
    counts = outcome["counts"]
    FIGURES.append(f"{adds.line()}; {checks.line()}; {traffic.line()}; {churn.line()}")
    FIGURES.append(
        f"foreign writer: {counts['ops']} changes ({during[0]} during ADDs, {during[1]} during CHECKs+traffic, "
        f"{during[2]} during DELs+lifecycles): {counts['legacy']} iptables-legacy, {counts['legacy-restore']} "
        f"iptables-legacy-restore --noflush, {counts['nft']} iptables-nft commands; {counts['rules-added']} rules "
        f"added, {counts['rules-deleted']} deleted, {counts['chains-created']} chains created, "
        f"{counts['chains-deleted']} deleted; 0 commands failed")
    FIGURES.append(f"{rule_count(expected_legacy) + rule_count(expected_nft)} foreign rules present at the end "
                   f"({rule_count(expected_legacy)} legacy incl. the stranger's 3, {rule_count(expected_nft)} nft), "
                   "all in place and in order; our tables back to the baseline")


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
