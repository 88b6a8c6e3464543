"""nf_tables netlink constants and encoders (``linux/netfilter/nf_tables.h``, ``nfnetlink.h``).

Expression attributes, registers, flags and handles are big-endian on the wire; verdict codes
are signed. Set data (addresses, ports, verdicts) is encoded exactly as ``nft`` encodes it, so
``nft list`` shows what we write in its usual syntax.
"""
from __future__ import annotations

import struct

from netlink.wire import attr, attr_str, nested

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11

NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
FAMILY_NAMES = {NFPROTO_INET: "inet", NFPROTO_IPV4: "ip", NFPROTO_IPV6: "ip6"}

# Message types (low byte; the subsystem is the high byte).
NEWTABLE, GETTABLE, DELTABLE = 0, 1, 2
NEWCHAIN, GETCHAIN, DELCHAIN = 3, 4, 5
NEWRULE, GETRULE, DELRULE = 6, 7, 8
NEWSET, GETSET, DELSET = 9, 10, 11
NEWSETELEM, GETSETELEM, DELSETELEM = 12, 13, 14

# Attributes.
TABLE_NAME, TABLE_FLAGS, TABLE_USE, TABLE_HANDLE, TABLE_USERDATA = 1, 2, 3, 4, 6
CHAIN_TABLE, CHAIN_HANDLE, CHAIN_NAME, CHAIN_HOOK, CHAIN_POLICY, CHAIN_USE, CHAIN_TYPE = 1, 2, 3, 4, 5, 6, 7
CHAIN_USERDATA = 12
HOOK_HOOKNUM, HOOK_PRIORITY = 1, 2
RULE_TABLE, RULE_CHAIN, RULE_HANDLE, RULE_EXPRESSIONS, RULE_USERDATA = 1, 2, 3, 4, 7
SET_TABLE, SET_NAME, SET_FLAGS, SET_KEY_TYPE, SET_KEY_LEN, SET_DATA_TYPE, SET_DATA_LEN = 1, 2, 3, 4, 5, 6, 7
SET_ID, SET_USERDATA = 10, 13
SET_ELEM_LIST_TABLE, SET_ELEM_LIST_SET, SET_ELEM_LIST_ELEMENTS = 1, 2, 3
SET_ELEM_KEY, SET_ELEM_DATA = 1, 2
LIST_ELEM = 1
EXPR_NAME, EXPR_DATA = 1, 2
DATA_VALUE, DATA_VERDICT = 1, 2
VERDICT_CODE, VERDICT_CHAIN = 1, 2

SET_F_MAP = 0x8

# Verdicts.
NF_DROP, NF_ACCEPT = 0, 1
NFT_JUMP, NFT_GOTO, NFT_RETURN = -3, -4, -5
VERDICT_NAMES = {NF_DROP: "drop", NF_ACCEPT: "accept", NFT_JUMP: "jump", NFT_GOTO: "goto", NFT_RETURN: "return"}

# Hooks (NF_INET_*) and priorities of the chain types we create.
HOOK_PREROUTING, HOOK_INPUT, HOOK_FORWARD, HOOK_OUTPUT, HOOK_POSTROUTING = 0, 1, 2, 3, 4
PRIORITY_DSTNAT, PRIORITY_FILTER, PRIORITY_SRCNAT = -100, 0, 100

# nft's data type ids (``enum datatypes``), kept in set key/data types so nft can print elements.
TYPE_VERDICT, TYPE_IPADDR, TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_IFNAME = 1, 7, 8, 12, 13, 41
TYPE_BITS = 6  # nft packs a concatenation's field types into one id, TYPE_BITS bits each
TYPE_SIZES = {TYPE_IPADDR: 4, TYPE_IP6ADDR: 16, TYPE_INET_PROTOCOL: 1, TYPE_INET_SERVICE: 2, TYPE_IFNAME: 16}

# Userdata TLVs (libnftnl's NFTNL_UDATA_*_COMMENT).
UDATA_TABLE_COMMENT = 0
UDATA_CHAIN_COMMENT = 0
UDATA_RULE_COMMENT = 0
UDATA_SET_KEYBYTEORDER, UDATA_SET_DATABYTEORDER = 0, 1
BYTEORDER_HOST, BYTEORDER_BIG_ENDIAN = 1, 2

_BE32 = struct.Struct("!I")
_BE32S = struct.Struct("!i")
_BE64 = struct.Struct("!Q")


def msg_type(command: int) -> int:
    return (NFNL_SUBSYS_NFTABLES << 8) | command


def nfgenmsg(family: int, res_id: int = 0) -> bytes:
    """The nfnetlink header every message starts with (family, version 0, big-endian res id)."""
    return struct.pack("=BB", family, 0) + struct.pack("!H", res_id)


def be32(attr_type: int, value: int) -> bytes:
    return attr(attr_type, _BE32.pack(value & 0xFFFFFFFF))


def be64(attr_type: int, value: int) -> bytes:
    return attr(attr_type, _BE64.pack(value))


def get_be32(payload: bytes) -> int:
    return int(_BE32.unpack_from(payload)[0])


def get_be32s(payload: bytes) -> int:
    return int(_BE32S.unpack_from(payload)[0])


def get_be64(payload: bytes) -> int:
    return int(_BE64.unpack_from(payload)[0])


def string(attr_type: int, value: str) -> bytes:
    return attr_str(attr_type, value)


def data_value(attr_type: int, value: bytes) -> bytes:
    """``NFTA_DATA_VALUE`` wrapped in ``attr_type`` (a cmp's data, a set key, ...)."""
    return nested(attr_type, attr(DATA_VALUE, value))


def verdict(code: int, chain: str | None = None) -> bytes:
    """The body of an ``NFTA_DATA_VERDICT``: code and, for jump/goto, the chain."""
    body = attr(VERDICT_CODE, _BE32S.pack(code))
    if chain is not None:
        body += attr_str(VERDICT_CHAIN, chain)
    return body


def data_verdict(attr_type: int, code: int, chain: str | None = None) -> bytes:
    return nested(attr_type, nested(DATA_VERDICT, verdict(code, chain)))


def comment_udata(tlv_type: int, text: str) -> bytes:
    """A comment as libnftnl stores it in userdata: type, length, NUL-terminated text."""
    # The kernel takes at most NFT_USERDATA_MAXLEN (256) bytes of userdata: 2 of TLV header, the NUL.
    raw = text.encode()[:253] + b"\0"
    return bytes((tlv_type, len(raw))) + raw


def udata_comment(udata: bytes, tlv_type: int) -> str | None:
    """The comment TLV of a userdata blob, or None."""
    offset = 0
    while offset + 2 <= len(udata):
        kind, length = udata[offset], udata[offset + 1]
        value = udata[offset + 2 : offset + 2 + length]
        if kind == tlv_type:
            return value.split(b"\0", 1)[0].decode(errors="replace")
        offset += 2 + length
    return None


def concat_type(types: tuple[int, ...]) -> int:
    """nft's id of a concatenation of data types, e.g. ``inet_proto . inet_service``."""
    packed = 0
    for kind in types:
        packed = (packed << TYPE_BITS) | kind
    return packed


def padded(value: bytes) -> bytes:
    """A field of a concatenated key: registers are 32 bits wide, so each field is padded to 4."""
    return value + b"\0" * (-len(value) % 4)
