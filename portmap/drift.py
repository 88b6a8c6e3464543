"""What ``cnictl show`` asks of the portmap plugin: how one attachment's record compares with the node.

With the runtime's cached result and port mappings this is exactly CHECK (``portmap.apply.check``):
the container's DNAT chain, its jumps and the shared chains. Without them (a runtime that caches
elsewhere) only what the record alone can tell: that the container's chain exists.
"""
from __future__ import annotations

from cni.errors import CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cni.records import Attachment


def chains(att: Attachment, record: dict[str, Any]) -> list[str]:
    if not record.get("families"):
        return []
    if record.get("backend") == "nftables":
        from portmap import nft  # noqa: PLC0415

        family_names = {4: "ip", 6: "ip6"}
        return [f"{family_names[int(f)]} cni_hostport/{nft.dnat_chain_name(att.network, att.container_id)}"
                for f in record["families"] if int(f) in family_names]
    from portmap import names  # noqa: PLC0415

    return [f"nat/{names.dnat_chain(att.network, att.container_id)}"]


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    """What drifted from the record on the live node; empty when everything is in place."""
    from portmap import config as portmap_config  # noqa: PLC0415
    from portmap import plugin  # noqa: PLC0415

    layout = plugin._layout(plugin._backend_of(record))  # CHECK's own code, on the record's backend
    families = sorted({int(f) for f in record.get("families") or [] if int(f) in (4, 6)})
    addresses = {}
    conf = None
    prev = config.get("prevResult")
    if prev:
        try:
            conf = portmap_config.load(config)
            addresses = portmap_config.container_addresses(prev, att.ifname)
        except (CNIError, ValueError):
            conf = None
    problems: list[str] = []
    for family in families:
        if conf is not None and conf.mappings and family in addresses:
            found = layout.check(conf, att.network, att.container_id, family, addresses[family])
        else:
            found = layout.presence(att.network, att.container_id, family)
        problems += [f"IPv{family}: {text}" for text in found]
    return problems
