"""Netlink framing: message headers, TLV attributes (encode and decode) and the error payload.

Everything here is pure byte manipulation, so it can be unit-tested without a kernel.
All integers are in host byte order, as netlink requires.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # avoids importing ``typing`` at run time; type checkers treat it as True
if TYPE_CHECKING:
    from collections.abc import Iterator

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
# Flags on NLMSG_ERROR replies.
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
ATTR_HEADER = struct.Struct("=HH")  # length, type
_U8 = struct.Struct("=B")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")


def _padding(length: int) -> bytes:
    return b"\0" * (-length % 4)


def message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    """One complete netlink message (header + body); the port id is left to the kernel."""
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), msg_type, flags, seq, 0) + body


def attr(attr_type: int, payload: bytes) -> bytes:
    """One TLV attribute, padded to the 4-byte alignment netlink requires."""
    length = ATTR_HEADER.size + len(payload)
    return ATTR_HEADER.pack(length, attr_type) + payload + _padding(length)


def attr_u8(attr_type: int, value: int) -> bytes:
    return attr(attr_type, _U8.pack(value))


def attr_u16(attr_type: int, value: int) -> bytes:
    return attr(attr_type, _U16.pack(value))


def attr_u32(attr_type: int, value: int) -> bytes:
    return attr(attr_type, _U32.pack(value))


def attr_str(attr_type: int, value: str) -> bytes:
    """A NUL-terminated string attribute (NLA_STRING / NLA_NUL_STRING both accept it)."""
    return attr(attr_type, value.encode() + b"\0")


def nested(attr_type: int, *children: bytes) -> bytes:
    """A nested attribute; NLA_F_NESTED is set because strict kernel policies require it."""
    return attr(attr_type | NLA_F_NESTED, b"".join(children))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Decode the attributes in ``data[offset:]`` into {type: payload}; the last duplicate wins.

    The nested/byte-order flag bits are masked off the type. A truncated trailing
    attribute ends the parse instead of raising: the kernel never sends one, and a
    partial answer is more useful than none.
    """
    attrs: dict[int, bytes] = {}
    end = len(data)
    while offset + ATTR_HEADER.size <= end:
        length, attr_type = ATTR_HEADER.unpack_from(data, offset)
        if length < ATTR_HEADER.size or offset + length > end:
            break
        attrs[attr_type & NLA_TYPE_MASK] = data[offset + ATTR_HEADER.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


def iter_attrs(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Like ``parse_attrs`` but keeps repeated types (e.g. a list of VLAN infos) in order."""
    end = len(data)
    while offset + ATTR_HEADER.size <= end:
        length, attr_type = ATTR_HEADER.unpack_from(data, offset)
        if length < ATTR_HEADER.size or offset + length > end:
            return
        yield attr_type & NLA_TYPE_MASK, data[offset + ATTR_HEADER.size : offset + length]
        offset += (length + 3) & ~3


def u8(payload: bytes) -> int:
    return payload[0]


def u16(payload: bytes) -> int:
    return int(_U16.unpack_from(payload)[0])


def u32(payload: bytes) -> int:
    return int(_U32.unpack_from(payload)[0])


def i32(payload: bytes) -> int:
    return int(_I32.unpack_from(payload)[0])


def cstr(payload: bytes) -> str:
    """A string attribute without its NUL terminator."""
    return payload.split(b"\0", 1)[0].decode(errors="replace")


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Split one received datagram into (type, flags, sequence, body) tuples."""
    offset = 0
    end = len(data)
    while offset + NLMSG_HEADER.size <= end:
        length, msg_type, flags, seq, _port = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > end:
            raise ValueError(f"malformed netlink message at offset {offset}: length {length}")
        yield msg_type, flags, seq, data[offset + NLMSG_HEADER.size : offset + length]
        offset += (length + 3) & ~3


def error_code(body: bytes) -> int:
    """The errno of an NLMSG_ERROR body, made positive (0 is an ACK)."""
    return -i32(body)


def error_ext_message(body: bytes, flags: int) -> str:
    """The kernel's extended-ack text of an NLMSG_ERROR body, or ''.

    The body is ``int error; struct nlmsghdr request; [request payload]; [TLVs]``:
    the payload is omitted when the kernel capped it (NETLINK_CAP_ACK), and the
    TLVs are present only when it flagged NLM_F_ACK_TLVS (NETLINK_EXT_ACK).
    """
    if not flags & NLM_F_ACK_TLVS or len(body) < 4 + NLMSG_HEADER.size:
        return ""
    offset = 4 + NLMSG_HEADER.size
    if not flags & NLM_F_CAPPED:
        offset = 4 + ((u32(body[4:]) + 3) & ~3)
    text = parse_attrs(body, offset).get(NLMSGERR_ATTR_MSG)
    return cstr(text) if text else ""
