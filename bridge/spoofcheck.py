"""macspoofchk: drop frames from a container whose source MAC is not the container interface's.

Bridged frames are filtered in the nftables ``bridge`` family (python-iptables has no bridge
tables), in a table of our own so nothing else on the node is touched:

    table bridge pycni_spoofcheck {
        chain prerouting { type filter hook prerouting priority -300; policy accept;
            iifname "<host veth>" jump sc-<id> comment "<id>" }
        chain sc-<id> { ether saddr <mac> return; drop }
    }

``<id>`` is derived from (network, container ID, ifname). Each change is one ``nft -f`` run (an
atomic nftables transaction); the table goes away with its last container.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

from chains.lock import xtables_lock
from cni.errors import INTERNAL, CNIError

TABLE = "pycni_spoofcheck"
NFT_TIMEOUT = 10.0


def chain_id(network: str, container_id: str, ifname: str) -> str:
    return hashlib.sha512(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()[:16]


def _nft(script: str | None = None, *args: str) -> str:
    tool = shutil.which("nft", path=os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/nft"
    argv = [tool, *args] if script is None else [tool, "-f", "-"]
    try:
        proc = subprocess.run(argv, input=(script or "").encode(), capture_output=True, timeout=NFT_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CNIError(INTERNAL, f"macspoofchk needs nft: {exc}") from None
    if proc.returncode != 0:
        raise CNIError(INTERNAL, f"nft failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


def _jump_handles(ident: str) -> list[int]:
    """Handles of the prerouting rules that jump to this attachment's chain."""
    try:
        listing = json.loads(_nft(None, "-j", "list", "chain", "bridge", TABLE, "prerouting"))
    except CNIError:
        return []  # no table or chain: nothing to find
    handles = []
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("comment") == ident:
            handles.append(int(rule["handle"]))
    return handles


def setup(network: str, container_id: str, ifname: str, host_veth: str, mac: str) -> None:
    with xtables_lock():  # serialises with teardown's "last one removes the table"
        _setup(network, container_id, ifname, host_veth, mac)


def _setup(network: str, container_id: str, ifname: str, host_veth: str, mac: str) -> None:
    ident = chain_id(network, container_id, ifname)
    chain = f"sc-{ident}"
    deletes = "".join(f"delete rule bridge {TABLE} prerouting handle {h}\n" for h in _jump_handles(ident))
    _nft(f"""add table bridge {TABLE}
add chain bridge {TABLE} prerouting {{ type filter hook prerouting priority -300; policy accept; }}
add chain bridge {TABLE} {chain}
flush chain bridge {TABLE} {chain}
{deletes}add rule bridge {TABLE} {chain} ether saddr {mac} return
add rule bridge {TABLE} {chain} drop
add rule bridge {TABLE} prerouting iifname "{host_veth}" jump {chain} comment "{ident}"
""")


def teardown(network: str, container_id: str, ifname: str) -> None:
    with xtables_lock():
        _teardown(network, container_id, ifname)


def _teardown(network: str, container_id: str, ifname: str) -> None:
    ident = chain_id(network, container_id, ifname)
    handles = _jump_handles(ident)
    script = "".join(f"delete rule bridge {TABLE} prerouting handle {h}\n" for h in handles)
    try:
        _nft(script + f"delete chain bridge {TABLE} sc-{ident}\n")
    except CNIError:
        if handles:  # the chain was already gone; still drop the jumps
            _nft(script)
    _remove_table_if_unused()


def _remove_table_if_unused() -> None:
    try:
        listing = json.loads(_nft(None, "-j", "list", "table", "bridge", TABLE))
    except CNIError:
        return
    chains = [i["chain"]["name"] for i in listing.get("nftables", []) if "chain" in i]
    if chains == ["prerouting"] and not any("rule" in i for i in listing.get("nftables", [])):
        try:
            _nft(None, "delete", "table", "bridge", TABLE)
        except CNIError:
            pass  # someone added a container meanwhile: the table is in use again
