"""What ``cnictl show`` asks of the firewall plugin: how one attachment's record compares with the node.

The record names the addresses and isolation pairs the attachment has rules for; they are checked
with CHECK's own ``firewall.apply.problems`` in each family's filter table.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment

def chains(att: Attachment, record: dict[str, Any]) -> list[str]:
    from firewall import rules  # noqa: PLC0415

    if not record.get("families"):
        return []
    if record.get("backend") == "nftables":
        return ["inet cni_firewall/forward"]
    return [f"filter/{rules.FORWARD_CHAIN}"]


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    """What drifted from the record on the live node; empty when everything is in place."""
    from firewall import ownership, plugin  # noqa: PLC0415
    from firewall.config import admin_chain_name  # noqa: PLC0415

    try:
        holdings = ownership.from_record(record)
    except ValueError as exc:
        return [f"unreadable record: {exc}"]
    try:
        admin = admin_chain_name(str(config.get("iptablesAdminChainName") or ""))
    except ValueError as exc:
        return [f"config: iptablesAdminChainName: {exc}"]
    layout = plugin._layout(ownership.backend_of(record))  # CHECK's own code, on the record's backend
    problems: list[str] = []
    for family, held in sorted(holdings.items()):
        if held.addresses:
            problems += [f"IPv{family}: {text}" for text in layout.check(family, admin, held)]
    return problems
