"""The end-to-end demo: a node, two containers and an external host, all in namespaces of its own.

It installs the plugins into a temporary CNI bin dir, attaches two containers with
``examples/20-portmap.conflist`` through ``cnictl`` (c1 publishes 8080 -> 80/tcp and 5353 -> 53/udp),
shows what each step added to the node, proves the traffic paths, then deletes both and shows that
the node is exactly as before. Nothing outside its own namespaces and temp dir is touched, and
everything is removed again, even on failure.

``--conflist ptp`` runs ``examples/ptp-portmap.conflist`` instead (a veth pair per container, routed
through the node, no bridge). ``--backend nftables`` runs the conflist with portmap's ``backend``, bridge's ``ipMasqBackend`` and
the firewall's ``backend`` set to nftables, and shows the node's ``nft list ruleset`` growing and
shrinking as it shows iptables-save for the iptables backend.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.netenv import EXTERNAL_NET, Node, node_env, request, server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_IP = f"{EXTERNAL_NET}.1"
EXT_IP = f"{EXTERNAL_NET}.2"


def title(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(label: str, text: str) -> None:
    print(f"-- {label}")
    for line in text.strip().splitlines():
        print(f"   {line}")


CONFLISTS = {"bridge": "20-portmap.conflist", "ptp": "ptp-portmap.conflist"}


def prepare_conflist(node: Node, backend: str, kind: str) -> str:
    """The example conflist, with its state kept in the demo's temp dir; returns its network name."""
    with open(os.path.join(HERE, CONFLISTS[kind])) as f:
        conflist = json.load(f)
    for plugin in conflist["plugins"]:  # keep all state (and the log) in the demo's temp dir
        plugin["ipMasqBackend" if plugin["type"] in ("bridge", "ptp") else "backend"] = backend
        plugin["stateDir"] = node.state_dir
        if "logFile" in plugin:
            plugin["logFile"] = log_file(node)
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = node.data_dir
    with open(os.path.join(node.netconf_dir, CONFLISTS[kind]), "w") as f:
        json.dump(conflist, f, indent=2)
    return str(conflist["name"])


def log_file(node: Node) -> str:
    return os.path.join(node.work, "pycni.log")


def log_summary(node: Node) -> str:
    """One line per logged event, as an operator would skim the JSON lines."""
    lines = []
    if not os.path.exists(log_file(node)):
        return "(this conflist sets no logFile)"
    with open(log_file(node)) as f:
        for line in f:
            event = json.loads(line)
            what = event["outcome"] if event["event"] == "call" else event["event"]
            lines.append(f"{event['time']} {event['plugin']:<10} {event['command']:<5} {event['containerID']:<28} "
                         f"{what}" + (f" {event['duration_ms']:.1f} ms" if "duration_ms" in event else ""))
    return "\n".join(lines)


def node_view(node: Node) -> dict[str, str]:
    return {"links": node.exec("ip", "-br", "link").stdout.decode(),
            "addresses": node.exec("ip", "-br", "addr").stdout.decode(),
            "iptables-legacy-save": node.save(4), "ip6tables-legacy-save": node.save(6),
            "nft list ruleset": node.nft_ruleset()}


def diff(before: str, after: str) -> str:
    old = set(before.splitlines())
    return "\n".join(f"+ {line}" for line in after.splitlines() if line not in old) or "(nothing)"


def check(label: str, answer: str, expected: str) -> bool:
    ok = answer == expected
    print(f"   {'PASS' if ok else 'FAIL'}  {label:<55} -> {answer!r}" + ("" if ok else f" (expected {expected!r})"))
    return ok


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=("iptables", "nftables"), default="iptables",
                        help="where portmap, ipMasq and the firewall write their rules (default: iptables)")
    parser.add_argument("--conflist", choices=sorted(CONFLISTS), default="bridge",
                        help="bridge + portmap + firewall (default), or ptp + portmap")
    args = parser.parse_args(argv)
    backend = args.backend
    with node_env("demo") as node:
        for tool in ("iptables-legacy", "ip6tables-legacy"):  # tables a real node has loaded anyway
            for table in ("nat", "filter"):
                node.exec(tool, "-t", table, "-S")
        network = prepare_conflist(node, backend, args.conflist)
        c1, c2 = node.container("c1"), node.container("c2")
        title(f"node {node.ns}, containers {c1} {c2}, external host {node.external}, "
              f"{CONFLISTS[args.conflist]} on {backend}")
        before = node_view(node)

        title("cnictl add: c1 publishes 8080->80/tcp and 5353->53/udp, c2 publishes 8081->80/tcp")
        r1 = json.loads(node.cnictl("add", network, c1, "--publish", "8080:80/tcp", "--publish", "5353:53/udp").stdout)
        r2 = json.loads(node.cnictl("add", network, c2, "--publish", "8081:80/tcp").stdout)
        show("result for c1", json.dumps(r1, indent=2))
        ip1, ip2 = (r["ips"][0]["address"].split("/")[0] for r in (r1, r2))
        gateway = r1["ips"][0]["gateway"]

        title("what the two ADDs added to the node")
        after = node_view(node)
        for key in after:
            show(key, diff(before[key], after[key]))

        title("traffic")
        results = []
        with server(c1, "tcp", 80, tag="c1"), server(c1, "udp", 53, tag="c1/udp"), server(c2, "tcp", 80, tag="c2"), \
                server(node.external, "tcp", 9000, tag="ext"):
            results.append(check("c1 -> c2 directly", request(c1, "tcp", ip2, 80), f"c2 {ip1}"))
            results.append(check("c1 -> external host (ipMasq: it sees the node)", request(c1, "tcp", EXT_IP, 9000),
                                 f"ext {NODE_IP}"))
            results.append(check("external -> node:8080 (DNAT to c1)", request(node.external, "tcp", NODE_IP, 8080),
                                 f"c1 {EXT_IP}"))
            results.append(check("external -> node:5353/udp (DNAT to c1)",
                                 request(node.external, "udp", NODE_IP, 5353), f"c1/udp {EXT_IP}"))
            results.append(check("node -> its own address:8080", request(node.ns, "tcp", NODE_IP, 8080),
                                 f"c1 {NODE_IP}"))
            results.append(check("node -> 127.0.0.1:8080", request(node.ns, "tcp", "127.0.0.1", 8080), f"c1 {gateway}"))
            results.append(check("c1 -> node:8080, its own hostPort (hairpin)", request(c1, "tcp", NODE_IP, 8080),
                                 f"c1 {gateway}"))
            results.append(check("c2 -> node:8080, its neighbour's hostPort", request(c2, "tcp", NODE_IP, 8080),
                                 f"c1 {gateway}"))
            results.append(check("external -> node:8081 (DNAT to c2)", request(node.external, "tcp", NODE_IP, 8081),
                                 f"c2 {EXT_IP}"))

        title("cnictl check, then cnictl del for both")
        for ctr in (c1, c2):
            node.cnictl("check", network, ctr)
            print(f"   check {ctr}: ok")
        for ctr in (c1, c2):
            node.cnictl("del", network, ctr)
            print(f"   del {ctr}: ok")

        title("the log (logFile/logLevel in the conflist): one JSON line per plugin call")
        show(log_file(node), log_summary(node))

        title("the node after both DELs, compared with before the first ADD")
        final = node_view(node)
        clean = True
        for key in ("iptables-legacy-save", "ip6tables-legacy-save", "nft list ruleset"):
            same = final[key] == before[key]
            clean &= same
            print(f"   {'identical' if same else 'DIFFERENT'}: {key}")
            if not same:
                show("left behind", diff(before[key], final[key]))
        left = [line for line in final["links"].splitlines() if line not in before["links"].splitlines()
                and not line.startswith("cni0")]
        print(f"   links left behind: {left or 'none'} (the bridge cni0 stays, as with the reference)")
        reservations = node.reservations(network)
        print(f"   IP reservations left: {reservations or 'none'}")
        clean &= not left and not reservations
        passed = sum(results)
        print(f"\n{passed} passed, {len(results) - passed} failed")
        return 0 if passed == len(results) and clean else 1


if __name__ == "__main__":
    sys.exit(main())
