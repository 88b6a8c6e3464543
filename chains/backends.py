"""Which netfilter backend a plugin writes to: ``iptables`` (legacy x_tables, via libiptc) or
``nftables`` (nf_tables, via :mod:`chains.nft`).

A plugin's config names one (portmap ``backend``, bridge and ptp ``ipMasqBackend``, firewall
``backend``); without one the default follows the reference: iptables, unless only nftables is
usable on this node (a kernel built without the legacy tables). Each plugin keeps one layout module
per backend with the same functions; :func:`layout` picks it, so nothing else in a plugin asks
which backend it is on.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

IPTABLES = "iptables"
NFTABLES = "nftables"
NAMES = (IPTABLES, NFTABLES)
# The legacy tables announce themselves here once loaded; a kernel that has them as a module
# loads it on first use, which its presence in modules.builtin or modules.dep tells.
_LEGACY_PROC = "/proc/net/ip_tables_names"


def iptables_usable() -> bool:
    if os.path.exists(_LEGACY_PROC):
        return True
    release = os.uname().release
    for index in ("modules.builtin", "modules.dep"):
        try:
            with open(f"/lib/modules/{release}/{index}", "rb") as f:
                if b"/ip_tables.ko" in f.read():
                    return True
        except OSError:
            continue
    return False


def nftables_usable() -> bool:
    try:
        from chains.nft.session import Session  # noqa: PLC0415

        Session().close()
        return True
    except OSError:
        return False


def default() -> str:
    """iptables unless only nftables is usable (the reference's rule)."""
    if iptables_usable() or not nftables_usable():
        return IPTABLES
    return NFTABLES


def resolve(configured: str | None) -> str:
    return configured or default()


def layout(modules: dict[str, str], backend: str) -> ModuleType:
    """The plugin's layout module for ``backend`` (``modules`` maps backend names to module paths)."""
    import importlib  # noqa: PLC0415 - frozen, already loaded by the interpreter

    return importlib.import_module(modules[backend])
