"""``Netlink``: one NETLINK_ROUTE socket and the rtnetlink operations the plugins need.

A netlink socket is bound for life to the network namespace it was created in, so
``Netlink.open(netns_path)`` briefly enters that namespace to create the socket and
then every operation on the object acts there, whatever thread calls it later.

Every request is acknowledged: a kernel refusal raises ``NetlinkError`` carrying the
kernel's errno (EEXIST, ENODEV, ...) and, when the kernel explains itself, its
extended-ack message. Objects are not thread-safe; use one per thread.
"""

from __future__ import annotations

import os
from errno import EINTR, EMSGSIZE, ENODEV

# ``_socket`` is the C half of ``socket``; the Python wrapper costs ~6 ms to import
# (enum, selectors) and adds nothing a netlink socket needs.
import _socket
import sys

from netlink import constants as c
from netlink import wire
from netlink.errors import NetlinkError
from netlink.inet import ADDRESS_BITS, broadcast_of, network_of, parse_cidr, parse_ip, parse_mac
from netlink.records import (
    BRIDGE_VLAN_INFO,
    IFADDRMSG,
    IFINFOMSG,
    RTMSG,
    Addr,
    BridgeVlan,
    Link,
    Route,
    decode_addr,
    decode_bridge_vlans,
    decode_header_index,
    decode_link,
    decode_route,
    route_is_cloned,
)
from netlink.wire import attr, attr_str, attr_u8, attr_u16, attr_u32, nested

TYPE_CHECKING = False  # avoids importing ``typing`` at run time; type checkers treat it as True
if TYPE_CHECKING:
    from types import TracebackType

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # don't echo our request back inside error replies
NETLINK_EXT_ACK = 11  # do send the kernel's textual explanation of errors
NETLINK_GET_STRICT_CHK = 12  # dump requests are checked strictly, and their header's filters honoured
RECEIVE_BUFFER_SIZE = 1 << 16  # the kernel caps dump datagrams at 32 KiB
DUMP_ATTEMPTS = 10  # a dump racing with changes is flagged NLM_F_DUMP_INTR and redone

CREATE_FLAGS = wire.NLM_F_REQUEST | wire.NLM_F_ACK | wire.NLM_F_CREATE | wire.NLM_F_EXCL
CHANGE_FLAGS = wire.NLM_F_REQUEST | wire.NLM_F_ACK
SKIP_STATS = attr_u32(c.IFLA_EXT_MASK, c.RTEXT_FILTER_SKIP_STATS)  # counters are big and unused


def _ifinfomsg(index: int = 0, family: int = c.AF_UNSPEC, flags: int = 0, change: int = 0) -> bytes:
    return IFINFOMSG.pack(family, 0, index, flags, change)


def _flag_change(flags: int, change: int, bit: int, wanted: bool | None) -> tuple[int, int]:
    """Add ``bit`` to an (ifi_flags, ifi_change) pair when ``wanted`` is not None."""
    if wanted is None:
        return flags, change
    return (flags | bit if wanted else flags), change | bit


def _check_vid(vid: int) -> None:
    if not 1 <= vid <= 4094:
        raise ValueError(f"invalid VLAN id {vid}: must be 1..4094")


class Netlink:
    """One rtnetlink socket, bound to the network namespace it was opened in."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._seq = 0
        self._buffer = bytearray(RECEIVE_BUFFER_SIZE)

    @classmethod
    def open(cls, netns_path: str | None = None) -> Netlink:
        """A socket in the netns at ``netns_path`` (a /run/netns or /proc/PID/ns/net path),
        or in the calling thread's current netns when None."""
        if netns_path is None:
            return cls(_new_socket())
        from netlink import netns  # only namespace switchers pay for ctypes

        with netns.enter(netns_path):
            return cls(_new_socket())

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- transport

    def _exchange(self, msg_type: int, flags: int, body: bytes, what: str) -> tuple[list[bytes], bool]:
        """Send one request and collect the bodies of its replies.

        Returns (reply bodies, whether the dump was interrupted by a concurrent change).
        Ends at the ACK (for NLM_F_ACK requests), at NLMSG_DONE (dumps) or at the first
        single-part reply (plain gets). Replies to other sequence numbers are leftovers
        of an abandoned earlier request and are skipped.
        """
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(wire.message(msg_type, flags, seq, body))
        replies: list[bytes] = []
        interrupted = False
        while True:
            for reply_type, reply_flags, reply_seq, reply in wire.iter_messages(self._receive(what)):
                if reply_seq != seq or reply_type == wire.NLMSG_NOOP:
                    continue
                if reply_type in (wire.NLMSG_ERROR, wire.NLMSG_DONE):
                    errno = wire.error_code(reply) if len(reply) >= 4 else 0
                    if errno:
                        ext = (
                            wire.error_ext_message(reply, reply_flags)
                            if reply_type == wire.NLMSG_ERROR
                            else ""
                        )
                        raise _error(errno, what, ext)
                    return replies, interrupted
                interrupted = interrupted or bool(reply_flags & wire.NLM_F_DUMP_INTR)
                replies.append(reply)
                if not reply_flags & wire.NLM_F_MULTI and not flags & wire.NLM_F_ACK:
                    return replies, interrupted

    def _receive(self, what: str) -> bytes:
        length = self._sock.recv_into(self._buffer, 0, _socket.MSG_TRUNC)
        if length > len(self._buffer):  # MSG_TRUNC makes recv report the datagram's full size
            raise _error(EMSGSIZE, what, f"reply of {length} bytes truncated")
        return bytes(memoryview(self._buffer)[:length])

    def _ack(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        self._exchange(msg_type, flags, body, what)

    def _get(self, msg_type: int, body: bytes, what: str) -> bytes:
        replies, _ = self._exchange(msg_type, wire.NLM_F_REQUEST, body, what)
        if not replies:
            raise _error(ENODEV, what, "no reply")
        return replies[0]

    def _dump(self, msg_type: int, body: bytes, what: str) -> list[bytes]:
        for _attempt in range(DUMP_ATTEMPTS):
            replies, interrupted = self._exchange(msg_type, wire.NLM_F_REQUEST | wire.NLM_F_DUMP, body, what)
            if not interrupted:
                return replies
        raise _error(EINTR, what, f"dump interrupted by concurrent changes {DUMP_ATTEMPTS} times")

    def _strict_dump(self, msg_type: int, body: bytes, what: str) -> list[bytes]:
        """A dump the kernel filters by the header's fields (NETLINK_GET_STRICT_CHK, Linux >= 4.20)."""
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        except OSError:  # an older kernel: the caller filters
            return self._dump(msg_type, body, what)
        try:
            return self._dump(msg_type, body, what)
        finally:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)

    # --------------------------------------------------------------------- links

    def link_get(self, name: str) -> Link | None:
        """The link called ``name``, or None if there is none."""
        body = _ifinfomsg() + attr_str(c.IFLA_IFNAME, name) + SKIP_STATS
        return self._get_link_or_none(body, f"get link {name!r}")

    def link_by_index(self, index: int) -> Link | None:
        """The link with ifindex ``index``, or None if there is none."""
        return self._get_link_or_none(_ifinfomsg(index) + SKIP_STATS, f"get link #{index}")

    def _get_link_or_none(self, body: bytes, what: str) -> Link | None:
        try:
            return decode_link(self._get(c.RTM_GETLINK, body, what))
        except NetlinkError as err:
            if err.errno == ENODEV:
                return None
            raise

    def links(self) -> list[Link]:
        """Every link in the namespace."""
        return [
            decode_link(body) for body in self._dump(c.RTM_GETLINK, _ifinfomsg() + SKIP_STATS, "list links")
        ]

    def _create_link(self, name: str, kind: str, attrs: list[bytes], info_data: bytes, what: str) -> Link:
        """Create a ``kind`` link (EEXIST if the name is taken) and return it as the kernel sees it."""
        link_info = [attr_str(c.IFLA_INFO_KIND, kind)]
        if info_data:
            link_info.append(nested(c.IFLA_INFO_DATA, info_data))
        body = (
            _ifinfomsg()
            + attr_str(c.IFLA_IFNAME, name)
            + b"".join(attrs)
            + nested(c.IFLA_LINKINFO, *link_info)
        )
        self._ack(c.RTM_NEWLINK, CREATE_FLAGS, body, what)
        link = self.link_get(name)
        if link is None:
            raise _error(ENODEV, what, "the new link disappeared")
        return link

    def bridge_add(self, name: str, *, mtu: int = 0, vlan_filtering: bool = False) -> Link:
        """Create a bridge (down, like every new link); ``mtu`` 0 keeps the kernel default."""
        attrs = [attr_u32(c.IFLA_MTU, mtu)] if mtu else []
        data = attr_u8(c.IFLA_BR_VLAN_FILTERING, 1) if vlan_filtering else b""
        return self._create_link(name, "bridge", attrs, data, f"create bridge {name!r}")

    def bridge_set(self, index: int, *, vlan_filtering: bool) -> None:
        """Change settings of an existing bridge."""
        link_info = nested(
            c.IFLA_LINKINFO,
            attr_str(c.IFLA_INFO_KIND, "bridge"),
            nested(c.IFLA_INFO_DATA, attr_u8(c.IFLA_BR_VLAN_FILTERING, int(vlan_filtering))),
        )
        self._ack(c.RTM_NEWLINK, CHANGE_FLAGS, _ifinfomsg(index) + link_info, f"configure bridge #{index}")

    def veth_add(
        self,
        name: str,
        peer_name: str,
        *,
        peer_netns_fd: int | None = None,
        mtu: int = 0,
        mac: str | None = None,
        peer_mac: str | None = None,
    ) -> Link:
        """Create a veth pair and return the ``name`` end (in this netns).

        The ``peer_name`` end is created directly in the netns open as ``peer_netns_fd``
        when given (so a socket opened in the container can put the host end in the host
        netns); ``Link.link_index`` of the result is the peer's ifindex there. ``mtu``
        (0 = default) applies to both ends, ``mac``/``peer_mac`` to one end each.
        """
        peer_attrs = [attr_str(c.IFLA_IFNAME, peer_name)]
        own_attrs = []
        if peer_netns_fd is not None:
            peer_attrs.append(attr_u32(c.IFLA_NET_NS_FD, peer_netns_fd))
        if mtu:
            peer_attrs.append(attr_u32(c.IFLA_MTU, mtu))
            own_attrs.append(attr_u32(c.IFLA_MTU, mtu))
        if peer_mac:
            peer_attrs.append(attr(c.IFLA_ADDRESS, parse_mac(peer_mac)))
        if mac:
            own_attrs.append(attr(c.IFLA_ADDRESS, parse_mac(mac)))
        # VETH_INFO_PEER is a struct ifinfomsg followed by the peer's own attributes.
        peer = attr(c.VETH_INFO_PEER, _ifinfomsg() + b"".join(peer_attrs))
        return self._create_link(name, "veth", own_attrs, peer, f"create veth {name!r} (peer {peer_name!r})")

    def link_set(
        self,
        index: int,
        *,
        up: bool | None = None,
        master: int | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        promisc: bool | None = None,
        netns_fd: int | None = None,
        name: str | None = None,
        allmulti: bool | None = None,
        txqlen: int | None = None,
    ) -> None:
        """Change a link; None leaves a setting alone.

        ``master`` is a bridge ifindex, 0 to detach. ``netns_fd`` moves the link to that
        netns (where the kernel applies the rest, including a rename to ``name``; the
        ifindex may change there, so look it up again by name afterwards).
        """
        flags, change = _flag_change(0, 0, c.IFF_UP, up)
        flags, change = _flag_change(flags, change, c.IFF_PROMISC, promisc)
        flags, change = _flag_change(flags, change, c.IFF_ALLMULTI, allmulti)
        attrs = []
        if netns_fd is not None:
            attrs.append(attr_u32(c.IFLA_NET_NS_FD, netns_fd))
        if name is not None:
            attrs.append(attr_str(c.IFLA_IFNAME, name))
        if mtu is not None:
            attrs.append(attr_u32(c.IFLA_MTU, mtu))
        if txqlen is not None:
            attrs.append(attr_u32(c.IFLA_TXQLEN, txqlen))
        if mac is not None:
            attrs.append(attr(c.IFLA_ADDRESS, parse_mac(mac)))
        if master is not None:
            attrs.append(attr_u32(c.IFLA_MASTER, master))
        if not attrs and not change:
            return
        body = _ifinfomsg(index, flags=flags, change=change) + b"".join(attrs)
        self._ack(c.RTM_SETLINK, CHANGE_FLAGS, body, f"configure link #{index}")

    def link_del(self, index: int) -> None:
        """Delete a link (for a veth, both ends go)."""
        self._ack(c.RTM_DELLINK, CHANGE_FLAGS, _ifinfomsg(index), f"delete link #{index}")

    # ------------------------------------------------------------ bridge ports

    def bridge_port_set(
        self, index: int, *, hairpin: bool | None = None, isolated: bool | None = None
    ) -> None:
        """Set flags of the bridge port ``index`` (which must be enslaved to a bridge)."""
        port_attrs = []
        if hairpin is not None:
            port_attrs.append(attr_u8(c.IFLA_BRPORT_MODE, int(hairpin)))
        if isolated is not None:
            port_attrs.append(attr_u8(c.IFLA_BRPORT_ISOLATED, int(isolated)))
        if not port_attrs:
            return
        # The kernel reads a non-nested IFLA_PROTINFO as a bare STP state (old ABI), so
        # the NLA_F_NESTED flag that ``nested`` sets is essential here.
        body = _ifinfomsg(index, family=c.AF_BRIDGE) + nested(c.IFLA_PROTINFO, *port_attrs)
        self._ack(c.RTM_SETLINK, CHANGE_FLAGS, body, f"configure bridge port #{index}")

    def bridge_vlan_add(
        self,
        index: int,
        vid: int,
        *,
        pvid: bool = False,
        untagged: bool = False,
        self_: bool = False,
        vid_end: int | None = None,
    ) -> None:
        """Allow VLAN ``vid`` (or ``vid``..``vid_end``) on a bridge port.

        ``pvid``: untagged ingress joins this VLAN; ``untagged``: egress without a tag.
        ``self_`` targets the bridge device itself (``bridge vlan add ... self``); then
        ``index`` is the bridge's. A range cannot be the pvid.
        """
        flags = (c.BRIDGE_VLAN_INFO_PVID if pvid else 0) | (c.BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0)
        body = _ifinfomsg(index, family=c.AF_BRIDGE) + _vlan_spec(vid, vid_end, flags, self_)
        self._ack(c.RTM_SETLINK, CHANGE_FLAGS, body, f"add VLAN {vid} to bridge port #{index}")

    def bridge_vlan_del(
        self, index: int, vid: int, *, self_: bool = False, vid_end: int | None = None
    ) -> None:
        """Remove VLAN ``vid`` (or ``vid``..``vid_end``) from a port (or the bridge, with ``self_``)."""
        body = _ifinfomsg(index, family=c.AF_BRIDGE) + _vlan_spec(vid, vid_end, 0, self_)
        self._ack(c.RTM_DELLINK, CHANGE_FLAGS, body, f"delete VLAN {vid} from bridge port #{index}")

    def bridge_vlans(self, index: int) -> list[BridgeVlan]:
        """The VLANs of a bridge port or bridge, ordered by id; [] when it has none."""
        body = _ifinfomsg(family=c.AF_BRIDGE) + attr_u32(c.IFLA_EXT_MASK, c.RTEXT_FILTER_BRVLAN_COMPRESSED)
        for reply in self._dump(c.RTM_GETLINK, body, f"list VLANs of #{index}"):
            if decode_header_index(reply) == index:
                vlans = decode_bridge_vlans(reply)
                if vlans:  # a port whose driver has bridge ops of its own is listed twice
                    return vlans
        return []

    # ----------------------------------------------------------------- addresses

    def addr_add(self, index: int, cidr: str, *, nodad: bool = False) -> None:
        """Add ``cidr`` (e.g. '10.88.0.1/16', 'fd00::1/64') to a link; EEXIST if present.

        IPv4 addresses get the subnet's broadcast address (below /31) and host scope
        inside 127/8, like ``ip addr add ... brd +``. ``nodad`` skips IPv6 DAD.
        """
        family, packed, prefixlen = parse_cidr(cidr)
        flags = c.IFA_F_NODAD if nodad else 0
        scope = c.RT_SCOPE_HOST if family == c.AF_INET and packed[0] == 127 else c.RT_SCOPE_UNIVERSE
        attrs = [attr(c.IFA_LOCAL, packed), attr(c.IFA_ADDRESS, packed)]
        if family == c.AF_INET and prefixlen < 31:
            attrs.append(attr(c.IFA_BROADCAST, broadcast_of(packed, prefixlen)))
        if flags:
            attrs.append(attr_u32(c.IFA_FLAGS, flags))
        body = IFADDRMSG.pack(family, prefixlen, flags, scope, index) + b"".join(attrs)
        self._ack(c.RTM_NEWADDR, CREATE_FLAGS, body, f"add address {cidr} to link #{index}")

    def addr_del(self, index: int, cidr: str) -> None:
        """Remove ``cidr`` (address and prefix length must match) from a link; EADDRNOTAVAIL if absent."""
        family, packed, prefixlen = parse_cidr(cidr)
        body = (
            IFADDRMSG.pack(family, prefixlen, 0, 0, index)
            + attr(c.IFA_LOCAL, packed)
            + attr(c.IFA_ADDRESS, packed)
        )
        self._ack(c.RTM_DELADDR, CHANGE_FLAGS, body, f"delete address {cidr} from link #{index}")

    def addrs(self, index: int | None = None, family: int | None = None) -> list[Addr]:
        """Addresses, optionally only those of link ``index`` and/or of ``family`` (AF_INET/AF_INET6)."""
        body = IFADDRMSG.pack(family or c.AF_UNSPEC, 0, 0, 0, index or 0)
        if index is None:
            replies = self._dump(c.RTM_GETADDR, body, "list addresses")
        else:
            # A busy node has one link-local address per veth: with strict checking the kernel dumps only
            # the wanted link's addresses instead of every address of the namespace.
            replies = self._strict_dump(c.RTM_GETADDR, body, "list addresses")
            # Kernels without strict dumps ignore the index: keep only the wanted link's. ifaddrmsg:
            # family, prefixlen, flags, scope (one byte each), then the link index.
            wanted = index.to_bytes(4, sys.byteorder)
            replies = [reply for reply in replies if reply[4:8] == wanted]
        found = [decode_addr(reply) for reply in replies]
        return [
            a for a in found if (index is None or a.index == index) and (family is None or a.family == family)
        ]

    # -------------------------------------------------------------------- routes

    def route_add(
        self,
        dst: str,
        gw: str | None = None,
        *,
        oif: int | None = None,
        table: int | None = None,
        priority: int | None = None,
        scope: int | None = None,
        mtu: int | None = None,
        advmss: int | None = None,
        src: str | None = None,
    ) -> None:
        """Add a unicast route to ``dst`` (CIDR; host bits are cleared); EEXIST if present.

        ``table`` defaults to main. ``scope`` defaults like ``ip route``: link for an
        IPv4 route without gateway, universe otherwise. ``src`` is the preferred source.
        """
        family = parse_cidr(dst)[0]
        if scope is None:
            scope = c.RT_SCOPE_LINK if gw is None and family == c.AF_INET else c.RT_SCOPE_UNIVERSE
        metrics = []
        if mtu is not None:
            metrics.append(attr_u32(c.RTAX_MTU, mtu))
        if advmss is not None:
            metrics.append(attr_u32(c.RTAX_ADVMSS, advmss))
        extra = [nested(c.RTA_METRICS, *metrics)] if metrics else []
        if src is not None:
            extra.append(attr(c.RTA_PREFSRC, _same_family_ip(src, family)))
        body = _route_message(
            dst,
            gw,
            oif,
            table,
            priority,
            scope=scope,
            protocol=c.RTPROT_BOOT,
            route_type=c.RTN_UNICAST,
            extra=extra,
        )
        self._ack(c.RTM_NEWROUTE, CREATE_FLAGS, body, f"add route {dst}" + (f" via {gw}" if gw else ""))

    def route_del(
        self,
        dst: str,
        gw: str | None = None,
        *,
        oif: int | None = None,
        table: int | None = None,
        priority: int | None = None,
    ) -> None:
        """Delete the route to ``dst`` matching the given fields; ESRCH if there is none."""
        body = _route_message(
            dst,
            gw,
            oif,
            table,
            priority,
            scope=c.RT_SCOPE_NOWHERE,
            protocol=c.RTPROT_UNSPEC,
            route_type=c.RTN_UNSPEC,
            extra=[],
        )
        self._ack(c.RTM_DELROUTE, CHANGE_FLAGS, body, f"delete route {dst}")

    def routes(self, family: int, table: int | None = c.RT_TABLE_MAIN) -> list[Route]:
        """The ``family`` routes of ``table`` (main by default, None for every table).

        Cached entries (RTM_F_CLONED) are left out. Multipath routes appear with
        ``gw`` and ``oif`` None.
        """
        body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        replies = self._dump(c.RTM_GETROUTE, body, "list routes")
        routes = [decode_route(reply) for reply in replies if not route_is_cloned(reply)]
        return [route for route in routes if table is None or route.table == table]

    def route_get(self, ip: str) -> Route:
        """The route the kernel would use to reach ``ip`` (like ``ip route get``).

        ``oif`` is the output ifindex; ENETUNREACH (or EHOSTUNREACH) if there is none.
        """
        family, packed = parse_ip(ip)
        body = RTMSG.pack(family, ADDRESS_BITS[family], 0, 0, 0, 0, 0, 0, 0) + attr(c.RTA_DST, packed)
        return decode_route(self._get(c.RTM_GETROUTE, body, f"look up route to {ip}"))


def _new_socket() -> _socket.socket:
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:  # older kernels: error replies are just less informative
                pass
        sock.bind((0, 0))  # port id chosen by the kernel
        sock.connect((0, 0))  # every request goes to the kernel
    except BaseException:
        sock.close()
        raise
    return sock


def _error(errno: int, what: str, detail: str = "") -> NetlinkError:
    message = f"{what}: {os.strerror(errno)}"
    return NetlinkError(errno, f"{message} ({detail})" if detail else message)


def _vlan_spec(vid: int, vid_end: int | None, flags: int, self_: bool) -> bytes:
    """The IFLA_AF_SPEC attribute naming one VLAN or a range of them."""
    _check_vid(vid)
    spec = [attr_u16(c.IFLA_BRIDGE_FLAGS, c.BRIDGE_FLAGS_SELF)] if self_ else []
    if vid_end is None or vid_end == vid:
        spec.append(attr(c.IFLA_BRIDGE_VLAN_INFO, BRIDGE_VLAN_INFO.pack(flags, vid)))
    else:
        _check_vid(vid_end)
        if vid_end < vid or flags & c.BRIDGE_VLAN_INFO_PVID:
            raise ValueError(
                f"invalid VLAN range {vid}-{vid_end}"
                + (" (a range cannot be the pvid)" if vid_end >= vid else "")
            )
        spec.append(
            attr(c.IFLA_BRIDGE_VLAN_INFO, BRIDGE_VLAN_INFO.pack(flags | c.BRIDGE_VLAN_INFO_RANGE_BEGIN, vid))
        )
        spec.append(
            attr(
                c.IFLA_BRIDGE_VLAN_INFO, BRIDGE_VLAN_INFO.pack(flags | c.BRIDGE_VLAN_INFO_RANGE_END, vid_end)
            )
        )
    return nested(c.IFLA_AF_SPEC, *spec)


def _same_family_ip(ip: str, family: int) -> bytes:
    ip_family, packed = parse_ip(ip)
    if ip_family != family:
        raise ValueError(f"address {ip} is not in the route's address family")
    return packed


def _route_message(
    dst: str,
    gw: str | None,
    oif: int | None,
    table: int | None,
    priority: int | None,
    *,
    scope: int,
    protocol: int,
    route_type: int,
    extra: list[bytes],
) -> bytes:
    """An rtmsg + attributes for adding or deleting the route to ``dst``."""
    family, packed, prefixlen = parse_cidr(dst)
    table = c.RT_TABLE_MAIN if table is None else table
    attrs = [attr_u32(c.RTA_TABLE, table)]  # rtm_table is a u8; the attribute holds any id
    if prefixlen:
        attrs.append(attr(c.RTA_DST, network_of(packed, prefixlen)))
    if gw is not None:
        attrs.append(attr(c.RTA_GATEWAY, _same_family_ip(gw, family)))
    if oif is not None:
        attrs.append(attr_u32(c.RTA_OIF, oif))
    if priority is not None:
        attrs.append(attr_u32(c.RTA_PRIORITY, priority))
    header = RTMSG.pack(
        family, prefixlen, 0, 0, table if table < 256 else c.RT_TABLE_UNSPEC, protocol, scope, route_type, 0
    )
    return header + b"".join(attrs) + b"".join(extra)
