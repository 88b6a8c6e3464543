"""The kernel side of tuning: read the current values, change them, put them back, compare them.

Every function works inside the container's network namespace: sysctls under /proc/sys/net are
per namespace (read and written with the thread inside it) and the link is reached through a
netlink socket opened there. Values are kept in the ownership record's shape: link attributes by
their config names (``mac``, ``mtu``, ``promisc``, ``allmulti``, ``txQLen``), sysctls by their
``/proc/sys``-relative slash paths.
"""
from __future__ import annotations

from cni.errors import INTERNAL, INVALID_CONFIG, CNIError
from netlink import netns, sysctl
from netlink.errors import NetlinkError
from netlink.rtnl import Netlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netlink.records import Link
    from tuning.config import TuningConf

_ENOENT = 2
_ENODEV = 19
# The kernel's answers to a value it will not take for this device: the config's fault (code 7).
_REFUSED_VALUE = frozenset({22, 34, 99, 95})  # EINVAL, ERANGE, EADDRNOTAVAIL, EOPNOTSUPP


def wanted_link_values(conf: TuningConf) -> dict[str, Any]:
    """The configured link attributes, by config name (only those that are set)."""
    values = {"mac": conf.mac, "mtu": conf.mtu, "promisc": conf.promisc, "allmulti": conf.allmulti,
              "txQLen": conf.txqlen}
    return {name: value for name, value in values.items() if value is not None}


def link_values(link: Link) -> dict[str, Any]:
    """A link's current attributes, by config name."""
    return {"mac": link.mac, "mtu": link.mtu, "promisc": link.promisc, "allmulti": link.allmulti,
            "txQLen": link.txqlen}


def find_link(nl: Netlink, ifname: str) -> Link:
    link = nl.link_get(ifname)
    if link is None:
        raise CNIError(INTERNAL, f"failed to get {ifname!r}: no such interface in the container")
    return link


def read_sysctls(netns_path: str, paths: list[str]) -> dict[str, str]:
    """The current value of each path; a key the namespace does not have is a config error."""
    current = {}
    with netns.enter(netns_path):
        for path in paths:
            try:
                current[path] = sysctl.read(path)
            except FileNotFoundError:
                raise CNIError(INVALID_CONFIG, f"sysctl {path.replace('/', '.')} does not exist "
                                               "in the container's network namespace") from None
    return current


def write_sysctls(netns_path: str, values: dict[str, str], tolerate_missing: bool = False) -> list[str]:
    """Write each value; returns the failures as messages when ``tolerate_missing`` (restoring),
    raises on the first otherwise (applying). Missing keys are skipped when restoring: an
    interface key's directory goes with its interface."""
    failures = []
    with netns.enter(netns_path):
        for path, value in values.items():
            try:
                sysctl.write(path, value)
            except OSError as exc:
                if tolerate_missing:
                    if exc.errno != _ENOENT:
                        failures.append(f"sysctl {path.replace('/', '.')}: {exc.strerror}")
                    continue
                code = INVALID_CONFIG if exc.errno in _REFUSED_VALUE else INTERNAL
                raise CNIError(code, f"failed to set sysctl {path.replace('/', '.')} to {value!r}: "
                                     f"{exc.strerror}") from None
    return failures


def set_link_values(nl: Netlink, link: Link, values: dict[str, Any]) -> None:
    """Apply link attributes one at a time (the reference's order), so a refusal names its value."""
    for name in ("mac", "promisc", "mtu", "allmulti", "txQLen"):
        if name not in values:
            continue
        value = values[name]
        try:
            _set_one(nl, link.index, name, value)
        except NetlinkError as err:
            code = INVALID_CONFIG if err.errno in _REFUSED_VALUE else INTERNAL
            raise CNIError(code, f"failed to set {name} of {link.name} to {value}: {err.strerror}") from None


def _set_one(nl: Netlink, index: int, name: str, value: Any) -> None:
    if name == "mac":
        nl.link_set(index, mac=value)
    elif name == "mtu":
        nl.link_set(index, mtu=value)
    elif name == "promisc":
        nl.link_set(index, promisc=value)
    elif name == "allmulti":
        nl.link_set(index, allmulti=value)
    elif name == "txQLen":
        nl.link_set(index, txqlen=value)


def restore(netns_path: str, ifname: str, record: dict[str, Any]) -> list[str]:
    """Put back what the record says was there before; returns what could not be put back.

    A missing namespace, interface or per-interface sysctl is nothing to restore (it is gone with
    what it belonged to). Every value is attempted even after a failure.
    """
    if not netns_path or not netns.is_netns(netns_path):
        return []
    failures = []
    sysctls = record.get("sysctl")
    if isinstance(sysctls, dict) and sysctls:
        # Reversed: with several keys naming one file (never from a valid config) the oldest wins.
        failures += write_sysctls(netns_path, {str(k): str(v) for k, v in reversed(list(sysctls.items()))},
                                  tolerate_missing=True)
    previous = record.get("link")
    if isinstance(previous, dict) and previous:
        with Netlink.open(netns_path) as nl:
            link = nl.link_get(ifname)
            if link is None:
                return failures
            for name in ("mtu", "mac", "promisc", "allmulti", "txQLen"):  # the reference's restore order
                if previous.get(name) is None:
                    continue
                try:
                    _set_one(nl, link.index, name, previous[name])
                except (NetlinkError, ValueError, TypeError) as exc:
                    if isinstance(exc, NetlinkError) and exc.errno == _ENODEV:
                        return failures
                    failures.append(f"{name} of {ifname}: {exc}")
    return failures


def differences(netns_path: str, ifname: str, conf: TuningConf) -> list[str]:
    """How the container differs from the configuration, one message per value (empty: none)."""
    found = []
    if conf.sysctl:
        with netns.enter(netns_path):
            for path, wanted in conf.sysctl.items():
                key = conf.sysctl_keys[path]
                try:
                    current = sysctl.read(path)
                except OSError as exc:
                    found.append(f"sysctl {key}: cannot read /proc/sys/{path}: {exc.strerror}")
                    continue
                # The kernel prints multi-value keys with tabs (tcp_rmem "4096\t131072\t6291456").
                if current.split() != wanted.split():
                    found.append(f"sysctl {key} is {current!r}, configured {wanted!r}")
    with Netlink.open(netns_path) as nl:
        link = nl.link_get(ifname)
    if link is None:
        found.append(f"Cannot find container link {ifname}")
        return found
    current_values = link_values(link)
    for name, wanted in wanted_link_values(conf).items():
        current = current_values[name]
        if isinstance(current, str) and isinstance(wanted, str):
            same = current.lower() == wanted.lower()
        else:
            same = current == wanted
        if not same:
            found.append(f"{name} of {ifname} is {_show(current)}, configured {_show(wanted)}")
    return found


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
