"""ipMasq: masquerade what a container sends beyond its subnet, on the configured backend.

``ipMasqBackend`` (bridge, ptp) picks the layout: :mod:`bridge.ipmasq_iptables` (the reference's
``CNI-<hash>`` chains in ``nat``) or :mod:`bridge.ipmasq_nft` (the reference's
``inet cni_plugins_masquerade`` table). Records keep the backend, so DEL removes the rules from
where ADD put them; without a record both are swept.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

LAYOUTS = {"iptables": "bridge.ipmasq_iptables", "nftables": "bridge.ipmasq_nft"}


def _layout(backend: str | None) -> ModuleType:
    from chains.backends import layout, resolve  # noqa: PLC0415

    return layout(LAYOUTS, resolve(backend))


def setup(network: str, container_id: str, ips: list[Any], backend: str | None = None) -> None:
    _layout(backend).setup(network, container_id, ips)


def teardown(network: str, container_id: str, families: tuple[int, ...] = (4, 6), backend: str | None = None,
             addresses: list[str] | None = None) -> None:
    """Remove the container's masquerading from ``backend``; from both when it is None (no record)."""
    from chains.backends import NAMES  # noqa: PLC0415

    for name in (backend,) if backend else NAMES:
        _layout(name).teardown(network, container_id, families, addresses)


def check(network: str, container_id: str, ips: list[Any], backend: str | None = None) -> list[str]:
    return list(_layout(backend).check(network, container_id, ips))
