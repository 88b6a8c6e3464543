"""What ``cnictl show`` asks of the firewall plugin: how one attachment's record compares with the node.

The record names the addresses and isolation pairs the attachment has rules for; they are checked
with CHECK's own ``firewall.apply.problems`` in each family's filter table.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment

BACKEND = "iptables"


def chains(att: Attachment, record: dict[str, Any]) -> list[str]:
    from firewall import rules  # noqa: PLC0415

    return [f"filter/{rules.FORWARD_CHAIN}"] if record.get("families") else []


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    """What drifted from the record on the live node; empty when everything is in place."""
    backend = record.get("backend", BACKEND)
    if backend != BACKEND:
        return [f"rules of the {backend} backend are not inspected by this version"]
    from chains import table  # noqa: PLC0415
    from firewall import apply, ownership  # noqa: PLC0415
    from firewall.config import admin_chain_name  # noqa: PLC0415

    try:
        holdings = ownership.from_record(record)
    except ValueError as exc:
        return [f"unreadable record: {exc}"]
    try:
        admin = admin_chain_name(str(config.get("iptablesAdminChainName") or ""))
    except ValueError as exc:
        return [f"config: iptablesAdminChainName: {exc}"]
    problems: list[str] = []
    for family, held in sorted(holdings.items()):
        if held.addresses:
            problems += [f"IPv{family}: {text}" for text in
                         table.read(family, "filter", lambda tx, h=held: apply.problems(tx, admin, h))]
    return problems
