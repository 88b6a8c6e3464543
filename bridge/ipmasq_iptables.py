"""ipMasq on iptables: a per-container chain in ``nat`` that masquerades traffic leaving the container's subnet.

Layout exactly as the reference (``../shared/reference.md`` §3.3), so operators find what they
expect: chain ``CNI-`` + 24 hex digits of SHA-512(network + container ID); ``POSTROUTING -s <ip>
-j <chain>``; in the chain ``-d <subnet> -j ACCEPT`` and ``! -d 224.0.0.0/4 -j MASQUERADE``
(``ff00::/8`` for IPv6), all commented ``name: "<net>" id: "<containerID>"``.

Teardown needs only the chain name: jumps to it are found by target, so DEL works without the
container's addresses, its netns or prevResult.
"""
from __future__ import annotations

import ipaddress

from chains import table
from chains.owned import OwnedChain
from chains.rule import parse_args, parse_conditions, truncate_comment
from cni.digest import sha512_hex

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def chain_name(network: str, container_id: str) -> str:
    return "CNI-" + sha512_hex((network + container_id).encode())[:24]


def comment(network: str, container_id: str) -> str:
    return truncate_comment(f'name: "{network}" id: "{container_id}"')


def _owned(network: str, container_id: str, addresses: list[Any]) -> OwnedChain:
    """The chain for one family's addresses (ipaddress interfaces)."""
    name = chain_name(network, container_id)
    note = ["-m", "comment", "--comment", comment(network, container_id)]
    body = []
    for addr in addresses:
        body.append(parse_args(name, ["-d", str(addr.network), *note, "-j", "ACCEPT"]))
    if addresses:
        body.append(parse_args(name, ["!", "-d", MULTICAST[addresses[0].version], *note, "-j", "MASQUERADE"]))
    jumps = tuple(parse_conditions(["-s", str(addr.ip), *note]) for addr in addresses)
    return OwnedChain(table="nat", name=name, entry_chains=("POSTROUTING",), entry_rules=jumps, body=tuple(body))


def _by_family(ips: list[dict[str, Any]]) -> dict[int, list[Any]]:
    families: dict[int, list[Any]] = {}
    for ip in ips:
        addr = ipaddress.ip_interface(ip["address"] if isinstance(ip, dict) else ip)
        families.setdefault(addr.version, []).append(addr)
    return families


def setup(network: str, container_id: str, ips: list[dict[str, Any]]) -> None:
    for family, addresses in _by_family(ips).items():
        owned = _owned(network, container_id, addresses)
        table.apply(family, "nat", owned.ensure)


def teardown(network: str, container_id: str, families: tuple[int, ...] = (4, 6),
             addresses: list[str] | None = None) -> None:
    """Remove the chain and the jumps to it (found by the chain's name: ``addresses`` are not needed)."""
    owned = OwnedChain(table="nat", name=chain_name(network, container_id), entry_chains=("POSTROUTING",))
    for family in families:
        table.apply(family, "nat", owned.remove)


def check(network: str, container_id: str, ips: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for family, addresses in _by_family(ips).items():
        owned = _owned(network, container_id, addresses)
        problems += table.read(family, "nat", owned.check)
    return problems
