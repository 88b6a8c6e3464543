"""Start-up cost of the small plugins: median wall time of VERSION, ADD and DEL, ours beside the reference.

    sudo .venv/bin/python benchmarks/startup.py [--cycles 30] [--plugins loopback,tuning,ptp,host-device]

Our plugins are exec'd the way a runtime execs them without the resident helper (``PYCNI_HELPER=0``,
each exec imports what it needs), the reference binaries from ``/usr/lib/cni``. Everything runs in
throw-away network namespaces: a node, and per plugin and side a container that every cycle reuses
(each ADD is undone by its DEL: loopback's ``lo`` goes down again, tuning restores the veth, ptp
removes its pair, host-device moves its device back to the node). Execs go through the
benchmark's exec server (``spawner.py``) inside the node namespace, ours and the reference
alternating, so drift on the machine hits both alike. A plugin that is not installed on either side
is skipped with a note. The ratio is the median of ours over the median of the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from bench import Spawner  # noqa: E402 - a sibling module, after sys.path is set

REFERENCE_BIN = "/usr/lib/cni"
PLUGINS = ("loopback", "tuning", "ptp", "host-device")
OPS = ("VERSION", "ADD", "DEL")
CNI_VERSION = "1.0.0"  # the newest the Debian 1.1.1 reference speaks
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def sh(*argv: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.decode(errors='replace').strip()}")


def ours_available(plugin: str) -> bool:
    from importlib.util import find_spec  # noqa: PLC0415

    from cnictl.install import PLUGIN_ENTRIES  # noqa: PLC0415

    entry = PLUGIN_ENTRIES.get(plugin)
    return entry is not None and find_spec(entry.partition(":")[0]) is not None


class Bench:
    """The node, the containers, the bin dirs and the exec server of one run."""

    def __init__(self, cycles: int) -> None:
        self.cycles = cycles
        self.prefix = f"bst{os.getpid()}"
        self.work = tempfile.mkdtemp(prefix="pycni-startup-")
        self.namespaces: list[str] = []
        self.node = self.add_netns("node")
        self.ours_bin = os.path.join(self.work, "bin")
        # --no-helper: launchers only, no systemd units for the resident helper (this measures direct execs).
        proc = subprocess.run([sys.executable, "-m", "cnictl.cli", "install", "--dest", self.ours_bin, "--no-helper"],
                              capture_output=True, env=dict(os.environ, PYTHONPATH=REPO), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cnictl install: {proc.stderr.decode(errors='replace').strip()}")
        self.spawner = Spawner(f"/run/netns/{self.node}")

    def add_netns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def close(self) -> None:
        self.spawner.close()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", self.work], check=False)

    def bin_dir(self, side: str) -> str:
        return self.ours_bin if side == "ours" else REFERENCE_BIN

    def exec(self, side: str, plugin: str, command: str, conf: dict[str, Any], container: str,
             ifname: str) -> float:
        env = {"PATH": PATH, "CNI_COMMAND": command, "CNI_CONTAINERID": container,
               "CNI_NETNS": f"/run/netns/{container}", "CNI_IFNAME": ifname, "CNI_PATH": self.bin_dir(side),
               "PYCNI_HELPER": "0", "PYCNI_STATE_DIR": os.path.join(self.work, "state")}
        answer = self.spawner.run([os.path.join(self.bin_dir(side), plugin)], env, json.dumps(conf))
        if answer["code"] != 0:
            raise RuntimeError(f"{side} {plugin} {command} failed: {(answer['stdout'] or answer['stderr'])[:400]}")
        return float(answer["ms"])


def setup(bench: Bench, plugin: str, side: str) -> tuple[dict[str, Any], str, str]:
    """(config, container, ifname) for one plugin on one side, with what the container needs."""
    container = bench.add_netns(f"{plugin}-{side}")
    data_dir = os.path.join(bench.work, f"{plugin}-{side}-data")
    conf: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": f"st{plugin.replace('-', '')}", "type": plugin}
    sandbox = f"/run/netns/{container}"
    if plugin == "loopback":
        return conf, container, "lo"
    if plugin == "tuning":
        sh("ip", "netns", "exec", container, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        conf.update(dataDir=data_dir, mtu=1400, promisc=True, sysctl={"net.ipv4.conf.IFNAME.arp_filter": "1"},
                    prevResult={"cniVersion": CNI_VERSION, "interfaces": [{"name": "eth0", "sandbox": sandbox}]})
        return conf, container, "eth0"
    if plugin == "ptp":
        subnet = "10.211.0.0/24" if side == "ours" else "10.212.0.0/24"
        conf.update(ipMasq=False, ipam={"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]})
        return conf, container, "eth0"
    if plugin == "host-device":
        device = f"hd{side}"
        sh("ip", "netns", "exec", bench.node, "ip", "link", "add", device, "type", "veth", "peer", "name", f"{device}p")
        conf.update(device=device)
        return conf, container, "eth0"
    raise ValueError(plugin)


def measure(bench: Bench, plugin: str) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {side: {op: [] for op in OPS} for side in ("ours", "ref")}
    prepared = {side: setup(bench, plugin, side) for side in ("ours", "ref")}
    for cycle in range(bench.cycles):
        order = ("ours", "ref") if cycle % 2 == 0 else ("ref", "ours")
        for side in order:
            conf, container, ifname = prepared[side]
            for op in OPS:
                times[side][op].append(bench.exec(side, plugin, op, conf, container, ifname))
    return times


def report(results: dict[str, dict[str, dict[str, list[float]]]], cycles: int) -> str:
    lines = [f"median wall time in ms over {cycles} cycles, direct mode (PYCNI_HELPER=0), ratio ours/reference", "",
             "| plugin | op | ours | reference | ratio |", "|---|---|---:|---:|---:|"]
    for plugin, times in results.items():
        for op in OPS:
            ours, ref = statistics.median(times["ours"][op]), statistics.median(times["ref"][op])
            lines.append(f"| {plugin} | {op} | {ours:.1f} | {ref:.1f} | {ours / ref:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--plugins", default=",".join(PLUGINS), help="comma-separated, default: all four")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("startup.py needs root (network namespaces)", file=sys.stderr)
        return 2
    bench = Bench(args.cycles)
    results = {}
    try:
        for plugin in [p for p in args.plugins.split(",") if p]:
            if not ours_available(plugin):
                print(f"note: skipping {plugin}: ours is not installed (no module for it yet)", file=sys.stderr)
                continue
            if not os.access(os.path.join(REFERENCE_BIN, plugin), os.X_OK):
                print(f"note: skipping {plugin}: no reference binary in {REFERENCE_BIN}", file=sys.stderr)
                continue
            results[plugin] = measure(bench, plugin)
    finally:
        bench.close()
    print(report(results, args.cycles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
