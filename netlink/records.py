"""The values returned by ``Netlink`` queries, and their decoding from kernel messages.

Plain ``__slots__`` classes rather than dataclasses: importing ``dataclasses`` costs
~15 ms (it pulls in ``inspect``), more than this whole library is allowed.
"""

from __future__ import annotations

import struct

from netlink import constants as c
from netlink.inet import format_ip, format_mac
from netlink.wire import cstr, i32, iter_attrs, parse_attrs, u8, u32

IFINFOMSG = struct.Struct("=BxHiII")  # family, device type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
BRIDGE_VLAN_INFO = struct.Struct("=HH")  # flags, vid


class _Record:
    """Value semantics (repr, ==) derived from ``__slots__``."""

    __slots__: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, so not hashable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)


class Link(_Record):
    """A network interface as RTM_GETLINK reports it."""

    __slots__ = (
        "index",
        "name",
        "kind",
        "mac",
        "mtu",
        "flags",
        "master",
        "operstate",
        "link_index",
        "link_netnsid",
        "slave_kind",
        "vlan_filtering",
        "hairpin",
        "isolated",
        "txqlen",
    )
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "bridge", "veth", ...; None for e.g. lo
    mac: str | None  # "aa:bb:cc:dd:ee:ff"; None when the device has no hardware address
    mtu: int
    flags: int  # IFF_* bits
    master: int | None  # ifindex of the bridge (or other master) this link is enslaved to
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    link_index: int | None  # IFLA_LINK: a veth's peer ifindex (in the peer's netns)
    link_netnsid: int | None  # netns id, as seen from this netns, of the IFLA_LINK device
    slave_kind: str | None  # "bridge" when the link is a bridge port
    vlan_filtering: bool | None  # bridges only
    hairpin: bool | None  # bridge ports only
    isolated: bool | None  # bridge ports only
    txqlen: int | None  # transmit queue length (IFLA_TXQLEN); None when the kernel did not say

    def __init__(
        self,
        *,
        index: int,
        name: str,
        kind: str | None = None,
        mac: str | None = None,
        mtu: int = 0,
        flags: int = 0,
        master: int | None = None,
        operstate: str = "UNKNOWN",
        link_index: int | None = None,
        link_netnsid: int | None = None,
        slave_kind: str | None = None,
        vlan_filtering: bool | None = None,
        hairpin: bool | None = None,
        isolated: bool | None = None,
        txqlen: int | None = None,
    ) -> None:
        self.index = index
        self.name = name
        self.kind = kind
        self.mac = mac
        self.mtu = mtu
        self.flags = flags
        self.master = master
        self.operstate = operstate
        self.link_index = link_index
        self.link_netnsid = link_netnsid
        self.slave_kind = slave_kind
        self.vlan_filtering = vlan_filtering
        self.hairpin = hairpin
        self.isolated = isolated
        self.txqlen = txqlen

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP); see ``operstate`` for the operational state."""
        return bool(self.flags & c.IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & c.IFF_PROMISC)

    @property
    def allmulti(self) -> bool:
        return bool(self.flags & c.IFF_ALLMULTI)


class Addr(_Record):
    """An interface address as RTM_GETADDR reports it."""

    __slots__ = ("index", "family", "cidr", "scope", "flags", "label")
    index: int
    family: int  # AF_INET or AF_INET6
    cidr: str  # "10.88.0.1/16", "fd00::1/64"
    scope: int  # RT_SCOPE_*
    flags: int  # IFA_F_* bits
    label: str | None  # IPv4 only

    def __init__(
        self,
        *,
        index: int,
        family: int,
        cidr: str,
        scope: int = c.RT_SCOPE_UNIVERSE,
        flags: int = 0,
        label: str | None = None,
    ) -> None:
        self.index = index
        self.family = family
        self.cidr = cidr
        self.scope = scope
        self.flags = flags
        self.label = label

    @property
    def ip(self) -> str:
        return self.cidr.partition("/")[0]

    @property
    def prefixlen(self) -> int:
        return int(self.cidr.partition("/")[2])

    @property
    def tentative(self) -> bool:
        """IPv6 duplicate address detection has not finished yet."""
        return bool(self.flags & c.IFA_F_TENTATIVE)


class Route(_Record):
    """A route as RTM_GETROUTE reports it (a table entry, or the answer to a lookup)."""

    __slots__ = (
        "family",
        "dst",
        "gw",
        "oif",
        "table",
        "priority",
        "scope",
        "protocol",
        "type",
        "prefsrc",
        "mtu",
        "advmss",
    )
    family: int
    dst: str  # network CIDR; the default route is "0.0.0.0/0" or "::/0"
    gw: str | None
    oif: int | None  # output ifindex; None for multipath routes
    table: int
    priority: int | None  # metric
    scope: int  # RT_SCOPE_*
    protocol: int  # RTPROT_*
    type: int  # RTN_*
    prefsrc: str | None
    mtu: int | None
    advmss: int | None

    def __init__(
        self,
        *,
        family: int,
        dst: str,
        gw: str | None = None,
        oif: int | None = None,
        table: int = c.RT_TABLE_MAIN,
        priority: int | None = None,
        scope: int = c.RT_SCOPE_UNIVERSE,
        protocol: int = c.RTPROT_UNSPEC,
        type: int = c.RTN_UNICAST,
        prefsrc: str | None = None,
        mtu: int | None = None,
        advmss: int | None = None,
    ) -> None:
        self.family = family
        self.dst = dst
        self.gw = gw
        self.oif = oif
        self.table = table
        self.priority = priority
        self.scope = scope
        self.protocol = protocol
        self.type = type
        self.prefsrc = prefsrc
        self.mtu = mtu
        self.advmss = advmss


class BridgeVlan(_Record):
    """One VLAN configured on a bridge port (or on the bridge itself)."""

    __slots__ = ("vid", "pvid", "untagged")
    vid: int
    pvid: bool  # untagged ingress frames are assigned to this VLAN
    untagged: bool  # egress frames leave without a tag

    def __init__(self, *, vid: int, pvid: bool = False, untagged: bool = False) -> None:
        self.vid = vid
        self.pvid = pvid
        self.untagged = untagged


def _optional_u32(attrs: dict[int, bytes], attr_type: int) -> int | None:
    payload = attrs.get(attr_type)
    return u32(payload) if payload else None


def _optional_flag(attrs: dict[int, bytes] | None, attr_type: int) -> bool | None:
    if attrs is None or attr_type not in attrs:
        return None
    return bool(u8(attrs[attr_type]))


def decode_link(body: bytes) -> Link:
    """An RTM_NEWLINK body (ifinfomsg + attributes) as a ``Link``."""
    _family, _dev_type, index, flags, _change = IFINFOMSG.unpack_from(body)
    attrs = parse_attrs(body, IFINFOMSG.size)
    info = parse_attrs(attrs[c.IFLA_LINKINFO]) if c.IFLA_LINKINFO in attrs else {}
    kind = cstr(info[c.IFLA_INFO_KIND]) if c.IFLA_INFO_KIND in info else None
    slave_kind = cstr(info[c.IFLA_INFO_SLAVE_KIND]) if c.IFLA_INFO_SLAVE_KIND in info else None
    bridge_data = (
        parse_attrs(info[c.IFLA_INFO_DATA]) if kind == "bridge" and c.IFLA_INFO_DATA in info else None
    )
    port_data = (
        parse_attrs(info[c.IFLA_INFO_SLAVE_DATA])
        if slave_kind == "bridge" and c.IFLA_INFO_SLAVE_DATA in info
        else None
    )
    operstate = u8(attrs[c.IFLA_OPERSTATE]) if c.IFLA_OPERSTATE in attrs else 0
    netnsid = attrs.get(c.IFLA_LINK_NETNSID)
    return Link(
        index=index,
        name=cstr(attrs.get(c.IFLA_IFNAME, b"")),
        kind=kind,
        mac=format_mac(attrs[c.IFLA_ADDRESS]) if attrs.get(c.IFLA_ADDRESS) else None,
        mtu=_optional_u32(attrs, c.IFLA_MTU) or 0,
        flags=flags,
        master=_optional_u32(attrs, c.IFLA_MASTER) or None,
        operstate=c.OPERSTATES[operstate] if operstate < len(c.OPERSTATES) else str(operstate),
        link_index=_optional_u32(attrs, c.IFLA_LINK),
        link_netnsid=i32(netnsid) if netnsid else None,
        slave_kind=slave_kind,
        vlan_filtering=_optional_flag(bridge_data, c.IFLA_BR_VLAN_FILTERING),
        hairpin=_optional_flag(port_data, c.IFLA_BRPORT_MODE),
        isolated=_optional_flag(port_data, c.IFLA_BRPORT_ISOLATED),
        txqlen=u32(attrs[c.IFLA_TXQLEN]) if c.IFLA_TXQLEN in attrs else None,
    )


def decode_addr(body: bytes) -> Addr:
    """An RTM_NEWADDR body (ifaddrmsg + attributes) as an ``Addr``."""
    family, prefixlen, flags, scope, index = IFADDRMSG.unpack_from(body)
    attrs = parse_attrs(body, IFADDRMSG.size)
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only for
    # point-to-point peers (and IPv6 usually sends IFA_ADDRESS alone).
    packed = attrs.get(c.IFA_LOCAL) or attrs.get(c.IFA_ADDRESS, b"")
    if c.IFA_FLAGS in attrs:  # the u32 attribute supersedes the u8 header field
        flags = u32(attrs[c.IFA_FLAGS])
    return Addr(
        index=index,
        family=family,
        cidr=f"{format_ip(family, packed)}/{prefixlen}",
        scope=scope,
        flags=flags,
        label=cstr(attrs[c.IFA_LABEL]) if c.IFA_LABEL in attrs else None,
    )


def decode_route(body: bytes) -> Route:
    """An RTM_NEWROUTE body (rtmsg + attributes) as a ``Route``."""
    family, dst_len, _src_len, _tos, table, protocol, scope, route_type, _flags = RTMSG.unpack_from(body)
    attrs = parse_attrs(body, RTMSG.size)
    dst = attrs.get(c.RTA_DST) or bytes(4 if family == c.AF_INET else 16)
    metrics = parse_attrs(attrs[c.RTA_METRICS]) if c.RTA_METRICS in attrs else {}
    return Route(
        family=family,
        dst=f"{format_ip(family, dst)}/{dst_len}",
        gw=format_ip(family, attrs[c.RTA_GATEWAY]) if c.RTA_GATEWAY in attrs else None,
        oif=_optional_u32(attrs, c.RTA_OIF),
        table=_optional_u32(attrs, c.RTA_TABLE) or table,
        priority=_optional_u32(attrs, c.RTA_PRIORITY),
        scope=scope,
        protocol=protocol,
        type=route_type,
        prefsrc=format_ip(family, attrs[c.RTA_PREFSRC]) if c.RTA_PREFSRC in attrs else None,
        mtu=_optional_u32(metrics, c.RTAX_MTU),
        advmss=_optional_u32(metrics, c.RTAX_ADVMSS),
    )


def route_is_cloned(body: bytes) -> bool:
    """A cached/exception entry (RTM_F_CLONED) rather than a configured route."""
    return bool(RTMSG.unpack_from(body)[8] & c.RTM_F_CLONED)


def decode_bridge_vlans(body: bytes) -> list[BridgeVlan]:
    """The VLANs of an AF_BRIDGE RTM_NEWLINK body, with compressed ranges expanded."""
    attrs = parse_attrs(body, IFINFOMSG.size)
    vlans: list[BridgeVlan] = []
    range_start: int | None = None
    for attr_type, payload in iter_attrs(attrs.get(c.IFLA_AF_SPEC, b"")):
        if attr_type != c.IFLA_BRIDGE_VLAN_INFO:
            continue
        flags, vid = BRIDGE_VLAN_INFO.unpack_from(payload)
        if flags & c.BRIDGE_VLAN_INFO_RANGE_BEGIN:
            range_start = vid
            continue
        first = range_start if range_start is not None and flags & c.BRIDGE_VLAN_INFO_RANGE_END else vid
        range_start = None
        for member in range(first, vid + 1):
            vlans.append(
                BridgeVlan(
                    vid=member,
                    pvid=bool(flags & c.BRIDGE_VLAN_INFO_PVID),
                    untagged=bool(flags & c.BRIDGE_VLAN_INFO_UNTAGGED),
                )
            )
    return vlans


def decode_header_index(body: bytes) -> int:
    """The ifindex of an ifinfomsg-headed body, without decoding the rest."""
    return int(IFINFOMSG.unpack_from(body)[2])
