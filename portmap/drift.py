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

BACKEND = "iptables"


def chains(att: Attachment, record: dict[str, Any]) -> list[str]:
    from portmap import names  # noqa: PLC0415

    return [f"nat/{names.dnat_chain(att.network, att.container_id)}"] if record.get("families") else []


def inspect(att: Attachment, record: dict[str, Any], config: dict[str, Any], netns: str | None) -> list[str]:
    """What drifted from the record on the live node; empty when everything is in place."""
    backend = record.get("backend", BACKEND)
    if backend != BACKEND:
        return [f"rules of the {backend} backend are not inspected by this version"]
    from chains import table  # noqa: PLC0415
    from portmap import apply, names  # noqa: PLC0415
    from portmap import config as portmap_config  # noqa: PLC0415

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
    chain = names.dnat_chain(att.network, att.container_id)
    for family in families:
        if conf is not None and conf.mappings and family in addresses:
            problems += [f"IPv{family}: {text}" for text in
                         apply.check(conf, att.network, att.container_id, family, addresses[family])]
        elif not table.read(family, "nat", lambda tx: tx.has_chain(chain)):
            problems.append(f"IPv{family}: chain {chain} not found in table nat")
    return problems
