"""Pure (kernel-free) tests of netlink's byte encoding, address helpers and sysctl key handling."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netlink import constants as c
from netlink import sysctl, wire
from netlink.inet import broadcast_of, format_ip, format_mac, network_of, parse_cidr, parse_ip, parse_mac
from netlink.records import IFINFOMSG, decode_bridge_vlans, decode_link
from netlink.rtnl import _vlan_spec


def test_attr_is_padded_to_four_bytes() -> None:
    encoded = wire.attr(3, b"abcde")
    assert encoded == struct.pack("=HH", 9, 3) + b"abcde" + b"\0\0\0"


def test_string_attr_is_nul_terminated() -> None:
    assert wire.attr_str(3, "eth0") == struct.pack("=HH", 9, 3) + b"eth0\0" + b"\0\0\0"


def test_nested_sets_the_nested_flag_and_wraps_children() -> None:
    child = wire.attr_u8(4, 1)
    encoded = wire.nested(12, child)
    assert encoded == struct.pack("=HH", 4 + len(child), 12 | wire.NLA_F_NESTED) + child


def test_parse_attrs_masks_flags_and_stops_at_truncation() -> None:
    data = wire.nested(12, wire.attr_u32(1, 7)) + wire.attr_u16(2, 5) + b"\x08\x00"
    attrs = wire.parse_attrs(data)
    assert set(attrs) == {12, 2}
    assert wire.u32(wire.parse_attrs(attrs[12])[1]) == 7
    assert wire.u16(attrs[2]) == 5


@given(
    st.lists(st.tuples(st.integers(1, 0x3FFF), st.binary(max_size=40)), max_size=12, unique_by=lambda a: a[0])
)
def test_attrs_round_trip(pairs: list[tuple[int, bytes]]) -> None:
    data = b"".join(wire.attr(kind, payload) for kind, payload in pairs)
    assert len(data) % 4 == 0
    assert wire.parse_attrs(data) == dict(pairs)
    assert list(wire.iter_attrs(data)) == pairs


def test_iter_messages_splits_a_datagram() -> None:
    data = wire.message(16, 2, 7, b"abcd") + wire.message(3, 2, 7, struct.pack("=i", 0))
    assert list(wire.iter_messages(data)) == [(16, 2, 7, b"abcd"), (3, 2, 7, b"\0\0\0\0")]


def test_iter_messages_rejects_a_bad_length() -> None:
    data = struct.pack("=IHHII", 400, 16, 0, 1, 0)
    with pytest.raises(ValueError):
        list(wire.iter_messages(data))


def _error_body(errno: int, request_payload: bytes, tlvs: bytes, capped: bool) -> bytes:
    """An NLMSG_ERROR body as the kernel builds it: the echoed request is padded to 4 bytes."""
    request_header = struct.pack("=IHHII", 16 + len(request_payload), 16, 5, 1, 0)
    echoed = b"" if capped else request_payload + b"\0" * (-len(request_payload) % 4)
    return struct.pack("=i", -errno) + request_header + echoed + tlvs


@pytest.mark.parametrize("capped", [True, False])
def test_error_ext_message_found_with_and_without_capped_request(capped: bool) -> None:
    body = _error_body(95, b"x" * 10, wire.attr_str(wire.NLMSGERR_ATTR_MSG, "Unknown device type"), capped)
    flags = wire.NLM_F_ACK_TLVS | (wire.NLM_F_CAPPED if capped else 0)
    assert wire.error_code(body) == 95
    assert wire.error_ext_message(body, flags) == "Unknown device type"


def test_error_ext_message_absent_without_tlv_flag() -> None:
    body = _error_body(17, b"", wire.attr_str(1, "ignored"), capped=True)
    assert wire.error_ext_message(body, wire.NLM_F_CAPPED) == ""


# Request bodies iproute2 6.1 sends (captured with strace), except that we also set
# NLA_F_NESTED on IFLA_AF_SPEC (0x801a instead of 0x001a), which the kernel masks off.
@pytest.mark.parametrize(
    ("spec_args", "iproute2_bytes"),
    [
        # bridge vlan add dev X vid 100 pvid untagged
        (
            (100, None, c.BRIDGE_VLAN_INFO_PVID | c.BRIDGE_VLAN_INFO_UNTAGGED, False),
            b"\x0c\x00\x1a\x00\x08\x00\x02\x00\x06\x00\x64\x00",
        ),
        # bridge vlan add dev X vid 200-210
        (
            (200, 210, 0, False),
            b"\x14\x00\x1a\x00\x08\x00\x02\x00\x08\x00\xc8\x00\x08\x00\x02\x00\x10\x00\xd2\x00",
        ),
        # bridge vlan del dev br0 vid 1 self
        (
            (1, None, 0, True),
            b"\x14\x00\x1a\x00\x06\x00\x00\x00\x02\x00\x00\x00\x08\x00\x02\x00\x00\x00\x01\x00",
        ),
    ],
)
def test_vlan_spec_matches_iproute2(
    spec_args: tuple[int, int | None, int, bool], iproute2_bytes: bytes
) -> None:
    expected = iproute2_bytes[:2] + b"\x1a\x80" + iproute2_bytes[4:]
    assert _vlan_spec(*spec_args) == expected


@pytest.mark.parametrize(
    "bad",
    [
        (0, None, 0, False),
        (4095, None, 0, False),
        (10, 5, 0, False),
        (10, 20, c.BRIDGE_VLAN_INFO_PVID, False),
    ],
)
def test_vlan_spec_rejects_invalid_ids_and_ranges(bad: tuple[int, int | None, int, bool]) -> None:
    with pytest.raises(ValueError):
        _vlan_spec(*bad)


def test_decode_bridge_vlans_expands_ranges() -> None:
    infos = [
        (c.BRIDGE_VLAN_INFO_PVID | c.BRIDGE_VLAN_INFO_UNTAGGED, 1),
        (c.BRIDGE_VLAN_INFO_RANGE_BEGIN, 10),
        (c.BRIDGE_VLAN_INFO_RANGE_END, 12),
    ]
    spec = wire.nested(
        c.IFLA_AF_SPEC, *(wire.attr(c.IFLA_BRIDGE_VLAN_INFO, struct.pack("=HH", f, v)) for f, v in infos)
    )
    vlans = decode_bridge_vlans(IFINFOMSG.pack(c.AF_BRIDGE, 0, 5, 0, 0) + spec)
    assert [(v.vid, v.pvid, v.untagged) for v in vlans] == [
        (1, True, True),
        (10, False, False),
        (11, False, False),
        (12, False, False),
    ]


def test_decode_link_reads_bridge_port_data() -> None:
    port_data = wire.nested(
        c.IFLA_INFO_SLAVE_DATA, wire.attr_u8(c.IFLA_BRPORT_MODE, 1), wire.attr_u8(c.IFLA_BRPORT_ISOLATED, 0)
    )
    link_info = wire.nested(
        c.IFLA_LINKINFO,
        wire.attr_str(c.IFLA_INFO_KIND, "veth"),
        wire.attr_str(c.IFLA_INFO_SLAVE_KIND, "bridge"),
        port_data,
    )
    body = (
        IFINFOMSG.pack(0, 1, 7, c.IFF_UP | c.IFF_PROMISC, 0)
        + wire.attr_str(c.IFLA_IFNAME, "veth1")
        + wire.attr(c.IFLA_ADDRESS, bytes.fromhex("020000000001"))
        + wire.attr_u32(c.IFLA_MTU, 1400)
        + wire.attr_u32(c.IFLA_MASTER, 3)
        + wire.attr_u8(c.IFLA_OPERSTATE, 6)
        + link_info
    )
    link = decode_link(body)
    assert (link.index, link.name, link.kind, link.mac, link.mtu, link.master) == (
        7,
        "veth1",
        "veth",
        "02:00:00:00:00:01",
        1400,
        3,
    )
    assert (link.up, link.promisc, link.operstate, link.slave_kind, link.hairpin, link.isolated) == (
        True,
        True,
        "UP",
        "bridge",
        True,
        False,
    )
    assert link.vlan_filtering is None
    assert link == decode_link(body) and "veth1" in repr(link)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.88.0.1/16", (c.AF_INET, bytes([10, 88, 0, 1]), 16)),
        ("10.88.0.1", (c.AF_INET, bytes([10, 88, 0, 1]), 32)),
        ("fd00::1/64", (c.AF_INET6, bytes.fromhex("fd00" + "0" * 27 + "1"), 64)),
        ("::/0", (c.AF_INET6, bytes(16), 0)),
    ],
)
def test_parse_cidr(text: str, expected: tuple[int, bytes, int]) -> None:
    assert parse_cidr(text) == expected


@pytest.mark.parametrize(
    "bad", ["10.0.0.1/33", "10.0.0.1/", "10.0.0.1/-1", "10.0.0/8", "fd00::1/129", "x/1", "10.0.0.1/1\u0661"]
)
def test_parse_cidr_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cidr(bad)


@given(st.ip_addresses(), st.data())
def test_network_and_broadcast_agree_with_ipaddress(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, data: st.DataObject
) -> None:
    prefixlen = data.draw(st.integers(0, address.max_prefixlen))
    network = ipaddress.ip_network(f"{address}/{prefixlen}", strict=False)
    family, packed = parse_ip(str(address))
    # Compared as addresses: inet_ntop (like iproute2) may print '::255.255.255.255'
    # where ipaddress prints '::ffff:ffff'.
    assert ipaddress.ip_address(format_ip(family, network_of(packed, prefixlen))) == network.network_address
    assert ipaddress.ip_address(format_ip(family, broadcast_of(packed, prefixlen))) == network.broadcast_address


def test_mac_round_trip_and_rejects() -> None:
    assert format_mac(parse_mac("02:AB:cd:00:00:01")) == "02:ab:cd:00:00:01"
    for bad in ["02:ab:cd:00:00", "02:ab:cd:00:00:zz", "02ab.cd00.0001", "2:ab:cd:00:00:01"]:
        with pytest.raises(ValueError):
            parse_mac(bad)


@pytest.mark.parametrize("bad", ["", "/net/ipv4/ip_forward", "net/../kernel/x", "net//ipv4", "net/ipv4/./x"])
def test_sysctl_rejects_keys_escaping_proc_sys(bad: str) -> None:
    with pytest.raises(ValueError):
        sysctl.path_of(bad)


def test_sysctl_key_with_dotted_interface_name() -> None:
    assert (
        sysctl.path_of("net/ipv4/conf/cni0.100/route_localnet")
        == "/proc/sys/net/ipv4/conf/cni0.100/route_localnet"
    )
