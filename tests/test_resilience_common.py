"""Shared pieces of the resilience tests (this module holds no tests of its own).

- :class:`Runtime` runs a conflist the way libcni does (ADD in order, each plugin getting the previous
  result; DEL in reverse order), exec'ing the installed plugins in a node namespace.
- :func:`node_state` is everything an attachment can leave on a node (legacy tables of both families,
  the nftables ruleset, links of the node and of the containers, the host-local store, the plugins'
  state directory), so a test can say "exactly as before" on either netfilter backend.
- :data:`BACKENDS` and :func:`backend_options`: the resilience modules run once per backend
  (portmap ``backend``, bridge ``ipMasqBackend``, firewall ``backend``).
- :func:`report` prints a test module's figures (kill points survived, inputs tried) in pytest's output.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import stat
import subprocess
from collections.abc import Iterable
from typing import Any

import pytest

from tests.netenv import Node

NO_HELPER = {"PYCNI_HELPER": "0"}  # the executables do the work themselves: a kill kills the plugin
BACKENDS = ("iptables", "nftables")
# Our nftables tables: each carries a comment starting with this (tables of other programs never do).
OUR_NFT_COMMENT = 'comment "pycni'


def nft_ruleset(node: Node) -> str:
    """``nft list ruleset`` of the node without counter values (``-s``): iptables-nft counts packets in
    every rule, and traffic is not a change of anyone's rules."""
    return node.exec("nft", "--stateless", "list", "ruleset").stdout.decode()


def backend_options(plugin: str, backend: str) -> dict[str, str]:
    """The config key that puts ``plugin``'s netfilter rules on ``backend`` (none for the others)."""
    key = {"bridge": "ipMasqBackend", "ptp": "ipMasqBackend", "portmap": "backend", "firewall": "backend"}.get(plugin)
    return {key: backend} if key else {}


def firewall_available() -> bool:
    """Whether the firewall plugin is importable and complete (``PYCNI_TEST_FIREWALL=0`` leaves it out)."""
    if os.environ.get("PYCNI_TEST_FIREWALL") == "0":
        return False
    try:
        return hasattr(importlib.import_module("firewall.plugin"), "PLUGIN")
    except Exception:  # noqa: BLE001 - half-written module: leave it out
        return False


def touch_tables(node: Node) -> None:
    """Load nat and filter in both families, as on any real node, so 'before' shows them too."""
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        for table in ("nat", "filter"):
            node.exec(tool, "-t", table, "-S")


def run_plugin(node: Node, plugin: str, command: str, conf: dict[str, Any], ctr: str, *,
               env_extra: dict[str, str] | None = None, prefix: tuple[str, ...] = (), umask: int = -1,
               cwd: str | None = None, timeout: float = 60) -> tuple[Any, int, str]:
    """Exec one installed plugin in the node namespace, as :meth:`Node.run_plugin` does, with extras."""
    env = node.plugin_env(command, ctr)
    env.update(NO_HELPER)
    env.update(env_extra or {})
    proc = subprocess.run(["ip", "netns", "exec", node.ns, *prefix, os.path.join(node.bin_dir, plugin)],
                          input=json.dumps(conf).encode(), capture_output=True, env=env, umask=umask, cwd=cwd,
                          timeout=timeout, check=False)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return out, proc.returncode, proc.stderr.decode(errors="replace")


class Runtime:
    """One conflist: bridge (host-local in-process), portmap, and firewall when it exists."""

    def __init__(self, node: Node, network: str, mappings: list[dict[str, Any]], firewall: bool,
                 subnet: str = "10.88.0.0/16", backend: str = "iptables") -> None:
        self.node = node
        self.network = network
        self.mappings = mappings
        self.backend = backend
        bridge = {"cniVersion": "1.0.0", "name": network, "type": "bridge", "bridge": "cni0",
                  "isGateway": True, "ipMasq": True, "hairpinMode": True, "stateDir": node.state_dir,
                  "ipam": {"type": "host-local", "dataDir": node.data_dir, "ranges": [[{"subnet": subnet}]],
                           "routes": [{"dst": "0.0.0.0/0"}]}, **backend_options("bridge", backend)}
        portmap = {"cniVersion": "1.0.0", "name": network, "type": "portmap",
                   "capabilities": {"portMappings": True}, "stateDir": node.state_dir,
                   **backend_options("portmap", backend)}
        self.steps: list[tuple[str, dict[str, Any]]] = [("bridge", bridge), ("portmap", portmap)]
        # What ``run`` puts in front of a plugin's executable (e.g. strace), per plugin, and its umask.
        self.prefix: dict[str, tuple[str, ...]] = {}
        self.umask = -1
        if firewall:
            self.steps.append(("firewall", {"cniVersion": "1.0.0", "name": network, "type": "firewall",
                                            "stateDir": node.state_dir, **backend_options("firewall", backend)}))

    @property
    def plugins(self) -> list[str]:
        return [plugin for plugin, _ in self.steps]

    def conf(self, plugin: str, prev: dict[str, Any] | None, mappings: bool) -> dict[str, Any]:
        conf = dict(dict(self.steps)[plugin])
        if mappings and plugin == "portmap":
            conf["runtimeConfig"] = {"portMappings": self.mappings}
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def run(self, plugin: str, command: str, conf: dict[str, Any], ctr: str,
            kill_at: str | None = None, env_extra: dict[str, str] | None = None) -> tuple[Any, int, str]:
        env = dict(NO_HELPER, **(env_extra or {}))
        if kill_at:
            env["PYCNI_KILL_AT"] = kill_at
        return run_plugin(self.node, plugin, command, conf, ctr, env_extra=env, prefix=self.prefix.get(plugin, ()),
                          umask=self.umask)


    def add(self, ctr: str, kill: tuple[str, str] | None = None, start: str | None = None,
            prev: dict[str, Any] | None = None) -> AddRun:
        """ADD through the chain (from plugin ``start``, given ``prev``); ``kill`` = (plugin, fault point)."""
        run = AddRun(prev)
        started = start is None
        for plugin, _ in self.steps:
            started = started or plugin == start
            if not started:
                continue
            kill_at = kill[1] if kill and kill[0] == plugin else None
            out, rc, err = self.run(plugin, "ADD", self.conf(plugin, run.last, mappings=True), ctr, kill_at)
            if rc != 0:
                run.failed, run.rc, run.error, run.stderr = plugin, rc, out, err
                return run
            run.results[plugin] = out
            run.last = out
        return run

    def delete(self, ctr: str, prev: dict[str, Any] | None = None, mappings: bool = False,
               kill: tuple[str, str] | None = None, env_extra: dict[str, str] | None = None) -> list[str]:
        """DEL in reverse order; every plugin must succeed with empty stdout. Returns their stderr."""
        errors = []
        for plugin in reversed(self.plugins):
            kill_at = kill[1] if kill and kill[0] == plugin else None
            out, rc, err = self.run(plugin, "DEL", self.conf(plugin, prev, mappings), ctr, kill_at, env_extra)
            if kill_at:
                assert rc == -9, f"{plugin} DEL did not reach {kill_at}: rc={rc} {out} {err}"
                return errors
            assert rc == 0 and out is None, f"{plugin} DEL failed: rc={rc} {out} {err}"
            errors.append(err)
        return errors


class AddRun:
    """What one pass of ADD through the chain produced."""

    def __init__(self, prev: dict[str, Any] | None) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.last = prev  # the newest result: what the next plugin gets as prevResult
        self.failed: str | None = None
        self.rc = 0
        self.error: Any = None
        self.stderr = ""

    @property
    def ok(self) -> bool:
        return self.failed is None


def tree(root: str, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Every entry under ``root`` (no symlink followed): kind, mode and file contents."""
    skipped = set(skip)
    out: dict[str, Any] = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if name in skipped or any(name.startswith(p) for p in skipped if p.endswith(".")):
                continue
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(mode))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    out[rel] = ("file", oct(mode), f.read())
            else:
                out[rel] = ("other", oct(mode))
    return out


# The host-local round-robin cursors and its lock file are kept on purpose, like the reference's:
# they are not part of any attachment.
STORE_KEPT = ("lock", "last_reserved_ip.")


def container_links(ns: str) -> list[str]:
    from tests.netenv import ns_exec  # noqa: PLC0415

    proc = ns_exec(ns, "ip", "-j", "link", "show", check=False)
    if proc.returncode != 0:
        return ["<netns gone>"]
    return sorted(link["ifname"] for link in json.loads(proc.stdout or b"[]"))


def node_state(node: Node, network: str, containers: Iterable[str] = ()) -> dict[str, Any]:
    """Everything an attachment could leave behind on the node."""
    return {
        "v4": node.save(4),
        "v6": node.save(6),
        "nft": nft_ruleset(node),
        "links": node.links(),
        "containers": {ns: container_links(ns) for ns in containers},
        "store": tree(os.path.join(node.data_dir, network), skip=STORE_KEPT),
        "state": tree(node.state_dir),
    }


def state_diff(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What changed between two :func:`node_state` snapshots, line by line (for assertion messages)."""
    out = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, str) and isinstance(new, str):
            old_lines, new_lines = set(old.splitlines()), set(new.splitlines())
            out += [f"{key} - {line}" for line in old.splitlines() if line not in new_lines]
            out += [f"{key} + {line}" for line in new.splitlines() if line not in old_lines]
        elif isinstance(old, dict) and isinstance(new, dict):
            for sub in sorted(set(old) | set(new)):
                if old.get(sub) != new.get(sub):
                    out.append(f"{key}[{sub}]: {old.get(sub)!r} -> {new.get(sub)!r}")
        else:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out


def assert_same(before: dict[str, Any], now: dict[str, Any]) -> None:
    diff = state_diff(before, now)
    assert not diff, "node changed:\n" + "\n".join(diff)


def duplicate_rules(save: str) -> list[str]:
    """Rule lines that appear more than once in iptables-save output."""
    seen: set[str] = set()
    dups = []
    for line in save.splitlines():
        if line.startswith("-A "):
            if line in seen:
                dups.append(line)
            seen.add(line)
    return dups


def nft_chains(ruleset: str) -> dict[str, list[str]]:
    """``nft list ruleset`` text as {"<family> <table>/<chain>": [its statements, in order]}."""
    chains: dict[str, list[str]] = {}
    table, current = "", None
    for line in ruleset.splitlines():
        text = line.strip()
        if line.startswith("table "):
            table = text[len("table "):].rstrip(" {")
        elif line.startswith("\tchain "):
            current = chains.setdefault(f"{table}/{text[len('chain '):].rstrip(' {')}", [])
        elif line.startswith("\t}"):
            current = None
        elif current is not None and text and not text.startswith(("type ", "policy ", "comment ")):
            current.append(text)
    return chains


def duplicate_nft_rules(ruleset: str) -> list[str]:
    """Rules that appear more than once in the same nftables chain."""
    dups = []
    for chain, rules in nft_chains(ruleset).items():
        dups += [f"{chain}: {rule}" for i, rule in enumerate(rules) if rule in rules[:i]]
    return dups


def our_nft_tables(ruleset: str) -> dict[str, str]:
    """Our tables in ``nft list ruleset`` text ({"family name": its listing}): those whose comment is pycni's."""
    tables: dict[str, str] = {}
    name, lines = "", []
    for line in ruleset.splitlines():
        if line.startswith("table "):
            name, lines = line[len("table "):].rstrip(" {"), [line]
        elif name:
            lines.append(line)
            if line == "}":
                if any(entry.strip().startswith(OUR_NFT_COMMENT) for entry in lines[1:3]):
                    tables[name] = "\n".join(lines)
                name = ""
    return tables


OUR_NFT_TABLES = {"bridge": "inet cni_plugins_masquerade", "portmap": "ip cni_hostport",
                  "firewall": "inet cni_firewall"}


def assert_on_backend(node: Node, backend: str, plugins: Iterable[str], others: Iterable[str] = ()) -> None:
    """While containers are attached: the plugins' rules are on ``backend`` and nowhere else (so a test
    parametrised by backend really exercises it). Legacy lines naming one of ``others`` (chains of
    another program that look like ours) are left out."""
    strangers = tuple(others)
    legacy = "\n".join(line for line in (node.save(4) + "\n" + node.save(6)).splitlines()
                       if not any(name in line for name in strangers))
    ours = our_nft_tables(nft_ruleset(node))
    expected = {OUR_NFT_TABLES[plugin] for plugin in plugins if plugin in OUR_NFT_TABLES}
    if backend == "nftables":
        assert expected <= set(ours), f"our nftables tables {sorted(ours)}, expected {sorted(expected)}"
        assert "CNI-" not in legacy, "rules in the legacy tables although the backend is nftables"
    else:
        assert ours == {}, f"our nftables tables {sorted(ours)} although the backend is iptables"
        assert "CNI-HOSTPORT-DNAT" in legacy and ("CNI-FORWARD" in legacy or "firewall" not in plugins)


def assert_one_attachment(node: Node, before: dict[str, Any], now: dict[str, Any], ctr: str) -> None:
    """After a successful ADD: exactly one veth, one reservation, no rule twice (in either backend)."""
    assert duplicate_rules(now["v4"]) == [] and duplicate_rules(now["v6"]) == []
    assert duplicate_nft_rules(now["nft"]) == []
    new_links = sorted(set(now["links"]) - set(before["links"]))
    assert len(new_links) == 1 and new_links[0].startswith("veth"), new_links
    assert set(before["links"]) <= set(now["links"])
    assert now["containers"][ctr] == ["eth0", "lo"]
    new_reservations = [k for k in now["store"] if k not in before["store"]]
    assert len(new_reservations) == 1, new_reservations
    holder = now["store"][new_reservations[0]][2]
    assert holder == f"{ctr}\r\neth0".encode(), holder


def well_formed_error(out: Any, codes: Iterable[int]) -> bool:
    return (isinstance(out, dict) and isinstance(out.get("code"), int) and out["code"] in set(codes)
            and isinstance(out.get("msg"), str) and "Traceback" not in json.dumps(out))


def report(config: pytest.Config, title: str, lines: Iterable[str]) -> None:
    """Print the module's figures in pytest's terminal output (they show without -s)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    lines = list(lines)
    if reporter is None:
        print(title, *lines, sep="\n")
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(f"== {title}")
        for line in lines:
            reporter.write_line(f"   {line}")
