"""The host-device plugin's network config, read without pydantic (a handful of plain keys).

The device is chosen, in this order of precedence as the reference does, by ``device`` (its name),
``hwaddr`` (its MAC), ``kernelpath`` (its sysfs directory) or ``pciBusID``, which
``runtimeConfig.deviceID`` (the runtime's device-plugin allocation) overrides.
"""
from __future__ import annotations

import os

from cni import fastconf
from cni.errors import INVALID_CONFIG, CNIError, invalid_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KERNELPATH_ROOT = "/sys/devices/"
_HEX = frozenset("0123456789abcdefABCDEF")
_EXPECTED = {
    "cniVersion": "a string", "name": "a string", "type": "a string", "device": "a string",
    "hwaddr": "a string", "kernelpath": "a string", "pciBusID": "a string", "ipam": "an object",
    "dns": "an object", "stateDir": "a string", "runtimeConfig": "an object", "args": "an object",
}


class HostDeviceConf(fastconf.SlotsRepr):
    """What the host-device plugin reads of its config."""

    __slots__ = ("cniVersion", "name", "type", "device", "hwaddr", "kernelpath", "pciBusID", "ipam", "dns",
                 "stateDir", "runtimeConfig", "args")

    cniVersion: str
    name: str
    type: str
    device: str
    hwaddr: str  # normalised: lower case, colons
    kernelpath: str
    pciBusID: str  # runtimeConfig.deviceID when the runtime gives one
    ipam: dict[str, Any]
    dns: dict[str, Any] | None
    stateDir: str | None
    runtimeConfig: dict[str, Any]
    args: dict[str, Any]

    @property
    def ipam_type(self) -> str:
        kind = self.ipam.get("type")
        return kind if isinstance(kind, str) else ""

    def selector(self) -> str:
        """How the device is chosen, for messages: ``device "eth1"``, ``hwaddr 02:..``, ..."""
        for key in ("device", "hwaddr", "kernelpath", "pciBusID"):
            if getattr(self, key):
                return f'{key} "{getattr(self, key)}"'
        return "nothing"


def load(config: dict[str, Any]) -> HostDeviceConf:
    """The validated config; CNIError (code 7) naming the first bad key."""
    try:
        conf = _read(config)
    except fastconf.Unsure as unsure:
        key = str(unsure.args[0]) if unsure.args else "?"
        raise invalid_value("host-device", key, config.get(key), _EXPECTED.get(key, "a valid value")) from None
    device_id = conf.runtimeConfig.get("deviceID")
    if device_id is not None and device_id != "":
        if not isinstance(device_id, str):
            raise invalid_value("host-device", "runtimeConfig.deviceID", device_id, "a string")
        conf.pciBusID = device_id  # the runtime's allocation wins over the config's
    if not (conf.device or conf.hwaddr or conf.kernelpath or conf.pciBusID):
        raise CNIError(INVALID_CONFIG, 'specify either "device", "hwaddr", "kernelpath" or "pciBusID"')
    _validate_selectors(conf)
    return conf


def _read(config: dict[str, Any]) -> HostDeviceConf:
    fastconf.require_str_keys(config)
    conf = HostDeviceConf()
    conf.cniVersion, conf.name, conf.type = fastconf.netconf_fields(config)
    conf.device = fastconf.get_str(config, "device", "")
    conf.hwaddr = fastconf.get_str(config, "hwaddr", "")
    conf.kernelpath = fastconf.get_str(config, "kernelpath", "")
    conf.pciBusID = fastconf.get_str(config, "pciBusID", "")
    conf.ipam = fastconf.get_dict(config, "ipam")
    conf.dns = fastconf.get_optional_dict(config, "dns")
    conf.stateDir = fastconf.get_optional_str(config, "stateDir")
    conf.runtimeConfig = fastconf.get_dict(config, "runtimeConfig")
    conf.args = fastconf.get_dict(config, "args")
    return conf


def _validate_selectors(conf: HostDeviceConf) -> None:
    from cni.skel import ifname_problem  # noqa: PLC0415 - loaded already in a plugin process
    from netlink.inet import format_mac, parse_mac  # noqa: PLC0415

    if conf.device:
        problem = ifname_problem(conf.device)
        if problem:
            raise CNIError(INVALID_CONFIG, f"invalid host-device config: device: {problem} (got {conf.device!r})")
    if conf.hwaddr:
        try:
            conf.hwaddr = format_mac(parse_mac(conf.hwaddr))
        except ValueError:
            raise CNIError(INVALID_CONFIG, f"failed to parse MAC address {conf.hwaddr!r}") from None
    if conf.kernelpath:
        path = conf.kernelpath
        if not path.startswith(KERNELPATH_ROOT) or os.path.normpath(path) != path.rstrip("/"):
            raise CNIError(INVALID_CONFIG, f"kernel device path {path!r} must be absolute and begin with "
                                           f"{KERNELPATH_ROOT}")
    if conf.pciBusID and not is_pci_address(conf.pciBusID):
        raise CNIError(INVALID_CONFIG, f"invalid PCI address {conf.pciBusID!r}: expected DDDD:BB:DD.F")


def is_pci_address(text: str) -> bool:
    """``0000:00:19.0`` (domain, bus, device, function) or the short ``00:19.0``: also a safe path component."""
    head, dot, function = text.rpartition(".")
    parts = head.split(":")
    if not dot or len(function) != 1 or function not in "01234567" or len(parts) not in (2, 3):
        return False
    widths = (4, 2, 2) if len(parts) == 3 else (2, 2)
    return all(len(part) == width and all(c in _HEX for c in part) for part, width in zip(parts, widths))
