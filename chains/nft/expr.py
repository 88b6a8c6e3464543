"""Statements of nftables rules: the nft text a person reads and the expressions the kernel runs.

Each builder returns a :class:`Stmt` holding both, so the text in a CHECK message, a debug log or
a test is always the text of exactly the bytes committed. A rule (:class:`NftRule`) is a chain
name and a sequence of statements. The encodings are the ones ``nft`` itself generates (compare
``nft --debug=netlink``), so ``nft list`` prints our rules in its ordinary syntax.
"""
from __future__ import annotations

import struct

from chains.nft import wire as w
from netlink.wire import attr, attr_str, iter_attrs, nested, parse_attrs

# Registers: NFT_REG_1 is 16 bytes wide (an IPv6 address fits); concatenations use the
# 32-bit registers NFT_REG32_00 (8) onwards, one or more per field.
REG_VERDICT, REG_1, REG_2 = 0, 1, 2
REG32_00 = 8

CMP_EQ, CMP_NEQ = 0, 1
PAYLOAD_NETWORK, PAYLOAD_TRANSPORT = 1, 2
META_MARK, META_IIFNAME, META_OIFNAME, META_NFPROTO, META_L4PROTO = 3, 6, 7, 15, 16
CT_STATE, CT_STATUS = 0, 2
CT_STATE_BITS = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
IPS_DST_NAT = 0x20
FIB_RESULT_ADDRTYPE, FIB_F_DADDR = 3, 2
RTN_LOCAL = 2
NAT_DNAT = 1
NF_NAT_RANGE_MAP_IPS, NF_NAT_RANGE_PROTO_SPECIFIED = 1, 2
LOOKUP_F_INV = 1

PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132,
             "udplite": 136}
# (offset, length) of source and destination address in the IPv4 / IPv6 header.
ADDRESS_FIELDS = {(4, "saddr"): (12, 4), (4, "daddr"): (16, 4), (6, "saddr"): (8, 16), (6, "daddr"): (24, 16)}
FAMILY_KEYWORD = {4: "ip", 6: "ip6"}
NFPROTO_OF = {4: w.NFPROTO_IPV4, 6: w.NFPROTO_IPV6}

_HOST32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")


class Stmt:
    """One statement: ``text`` as nft prints it, ``exprs`` the encoded expressions."""

    __slots__ = ("text", "exprs")

    def __init__(self, text: str, exprs: tuple[bytes, ...]) -> None:
        self.text = text
        self.exprs = exprs

    def __repr__(self) -> str:
        return f"Stmt({self.text!r})"


class NftRule:
    """A rule of chain ``chain``: its statements, and optionally a comment (kept in userdata)."""

    __slots__ = ("chain", "stmts", "comment")

    def __init__(self, chain: str, stmts: tuple[Stmt, ...] | list[Stmt], comment: str | None = None) -> None:
        self.chain = chain
        self.stmts = tuple(stmts)
        self.comment = comment

    @property
    def text(self) -> str:
        text = " ".join(stmt.text for stmt in self.stmts if stmt.text)
        return f'{text} comment "{self.comment}"' if self.comment else text

    @property
    def exprs(self) -> tuple[bytes, ...]:
        return tuple(expr for stmt in self.stmts for expr in stmt.exprs)

    def canonical(self) -> list[tuple[str, dict[int, object]]]:
        return canonical_exprs(b"".join(self.exprs))

    def matches(self, kernel_exprs: list[tuple[str, dict[int, object]]]) -> bool:
        """Whether the kernel's expressions are this rule's: every attribute we send, equal.

        Attributes the kernel adds when it dumps a rule (defaults we did not send) are ignored.
        """
        ours = self.canonical()
        if len(ours) != len(kernel_exprs):
            return False
        for (name, attrs), (kname, kattrs) in zip(ours, kernel_exprs):
            if name != kname or any(kattrs.get(key) != value for key, value in attrs.items()):
                return False
        return True

    def __repr__(self) -> str:
        return f"NftRule({self.chain!r}, {self.text!r})"


# ---------------------------------------------------------------- raw expressions

def _expr(name: str, *attrs: bytes) -> bytes:
    return nested(w.LIST_ELEM, attr_str(w.EXPR_NAME, name), nested(w.EXPR_DATA, *attrs))


def _payload(base: int, offset: int, length: int, dreg: int) -> bytes:
    return _expr("payload", w.be32(1, dreg), w.be32(2, base), w.be32(3, offset), w.be32(4, length))


def _meta(key: int, dreg: int) -> bytes:
    return _expr("meta", w.be32(1, dreg), w.be32(2, key))


def _cmp(sreg: int, op: int, data: bytes) -> bytes:
    return _expr("cmp", w.be32(1, sreg), w.be32(2, op), w.data_value(3, data))


def _bitwise(reg: int, mask: bytes, xor: bytes) -> bytes:
    return _expr("bitwise", w.be32(1, reg), w.be32(2, reg), w.be32(3, len(mask)),
                 w.data_value(4, mask), w.data_value(5, xor))


def _immediate_verdict(code: int, chain: str | None = None) -> bytes:
    return _expr("immediate", w.be32(1, REG_VERDICT), w.data_verdict(2, code, chain))


def _immediate_data(dreg: int, value: bytes) -> bytes:
    return _expr("immediate", w.be32(1, dreg), w.data_value(2, value))


def _lookup(set_name: str, sreg: int, dreg: int | None = None, invert: bool = False) -> bytes:
    attrs = [attr_str(1, set_name), w.be32(2, sreg)]
    if dreg is not None:
        attrs.append(w.be32(3, dreg))
    if invert:
        attrs.append(w.be32(5, LOOKUP_F_INV))
    return _expr("lookup", *attrs)


# ---------------------------------------------------------------- fields (for keys)

class Field:
    """Something a rule loads into a register: an address, a protocol, a port, an interface."""

    __slots__ = ("text", "size", "type_id", "_load", "dependency")

    def __init__(self, text: str, size: int, type_id: int, load: tuple[str, int, int, int],
                 dependency: Stmt | None = None) -> None:
        self.text, self.size, self.type_id, self._load, self.dependency = text, size, type_id, load, dependency

    def load(self, reg: int) -> bytes:
        kind, a, b, c = self._load
        if kind == "meta":
            return _meta(a, reg)
        return _payload(a, b, c, reg)


def nfproto(family: int) -> Stmt:
    """``meta nfproto ipv4``: the implicit first match of an address match in an inet table."""
    return Stmt("", (_meta(META_NFPROTO, REG_1), _cmp(REG_1, CMP_EQ, bytes((NFPROTO_OF[family],)))))


def address_field(family: int, which: str, inet_table: bool = False) -> Field:
    offset, size = ADDRESS_FIELDS[(family, which)]
    return Field(f"{FAMILY_KEYWORD[family]} {which}", size, w.TYPE_IPADDR if family == 4 else w.TYPE_IP6ADDR,
                 ("payload", PAYLOAD_NETWORK, offset, size), nfproto(family) if inet_table else None)


L4PROTO = Field("meta l4proto", 1, w.TYPE_INET_PROTOCOL, ("meta", META_L4PROTO, 0, 0))
TH_DPORT = Field("th dport", 2, w.TYPE_INET_SERVICE, ("payload", PAYLOAD_TRANSPORT, 2, 2))


def interface_field(direction: str) -> Field:
    return Field(f"{direction}name", 16, w.TYPE_IFNAME, ("meta", META_IIFNAME if direction == "iif" else META_OIFNAME, 0, 0))


# ---------------------------------------------------------------- values

def protocol_number(name: str) -> int:
    if name.isdigit():
        return int(name)
    number = PROTOCOLS.get(name.lower())
    if number is None:
        import socket  # noqa: PLC0415 - only for protocols outside the common table

        try:
            number = socket.getprotobyname(name)
        except OSError:
            raise ValueError(f"unknown protocol {name!r}") from None
    return number


def address_bytes(address: str) -> bytes:
    import ipaddress  # noqa: PLC0415

    return ipaddress.ip_address(address).packed


def port_bytes(port: int) -> bytes:
    return _BE16.pack(port)


def ifname_bytes(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) > 15:
        raise ValueError(f"invalid interface name {name!r}")
    return raw.ljust(16, b"\0")


def key_bytes(values: list[bytes]) -> bytes:
    """The key of a set element: one value, or a concatenation of register-padded fields."""
    if len(values) == 1:
        return values[0]
    return b"".join(w.padded(value) for value in values)


# ---------------------------------------------------------------- statements

def fib_daddr_local() -> Stmt:
    return Stmt("fib daddr type local", (
        _expr("fib", w.be32(1, REG_1), w.be32(2, FIB_RESULT_ADDRTYPE), w.be32(3, FIB_F_DADDR)),
        _cmp(REG_1, CMP_EQ, _HOST32.pack(RTN_LOCAL))))


def l4proto(protocol: str) -> Stmt:
    return Stmt(f"meta l4proto {protocol}", (_meta(META_L4PROTO, REG_1),
                                             _cmp(REG_1, CMP_EQ, bytes((protocol_number(protocol),)))))


def dport(protocol: str, port: int) -> Stmt:
    """``tcp dport 8080`` (any protocol with ports: the transport header's destination port)."""
    return Stmt(f"{protocol} dport {port}", l4proto(protocol).exprs + (
        _payload(PAYLOAD_TRANSPORT, 2, 2, REG_1), _cmp(REG_1, CMP_EQ, port_bytes(port))))


def address(family: int, which: str, network: str, negate: bool = False, inet_table: bool = False) -> Stmt:
    """``ip saddr 10.88.0.0/16``, ``ip6 daddr != ff00::/8``, ``ip daddr 10.88.0.5``."""
    import ipaddress  # noqa: PLC0415

    net = ipaddress.ip_network(network, strict=False)
    if net.version != family:
        raise ValueError(f"{network} is not an IPv{family} address")
    field = address_field(family, which, inet_table)
    exprs: list[bytes] = list(field.dependency.exprs) if field.dependency else []
    exprs.append(field.load(REG_1))
    if net.prefixlen != net.max_prefixlen:
        exprs.append(_bitwise(REG_1, net.netmask.packed, bytes(field.size)))
    exprs.append(_cmp(REG_1, CMP_NEQ if negate else CMP_EQ, net.network_address.packed))
    shown = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return Stmt(f"{field.text} {'!= ' if negate else ''}{shown}", tuple(exprs))


def interface(direction: str, name: str, negate: bool = False) -> Stmt:
    """``iifname "cni0"`` / ``oifname != "cni0"``."""
    field = interface_field(direction)
    return Stmt(f'{field.text} {"!= " if negate else ""}"{name}"',
                (field.load(REG_1), _cmp(REG_1, CMP_NEQ if negate else CMP_EQ, ifname_bytes(name))))


def mark(value: int, mask: int | None = None, negate: bool = False) -> Stmt:
    exprs = [_meta(META_MARK, REG_1)]
    text = "meta mark"
    if mask is not None:
        exprs.append(_bitwise(REG_1, _HOST32.pack(mask), bytes(4)))
        text += f" & {mask:#010x}"
    exprs.append(_cmp(REG_1, CMP_NEQ if negate else CMP_EQ, _HOST32.pack(value)))
    return Stmt(f"{text} {'!= ' if negate else ''}{value:#010x}", tuple(exprs))


def _ct_bits(key: int, bits: int) -> tuple[bytes, ...]:
    return (_expr("ct", w.be32(1, REG_1), w.be32(2, key)), _bitwise(REG_1, _HOST32.pack(bits), bytes(4)),
            _cmp(REG_1, CMP_NEQ, bytes(4)))


def ct_state(*states: str) -> Stmt:
    bits = 0
    for state in states:
        bits |= CT_STATE_BITS[state]
    return Stmt(f"ct state {','.join(states)}", _ct_bits(CT_STATE, bits))


def ct_status_dnat() -> Stmt:
    return Stmt("ct status dnat", _ct_bits(CT_STATUS, IPS_DST_NAT))


def lookup(fields: tuple[Field, ...], set_name: str, verdict_map: bool = False, negate: bool = False,
           masks: dict[int, bytes] | None = None) -> Stmt:
    """``<fields> @set`` or ``<fields> vmap @map``: the fields loaded into consecutive registers, field
    ``i`` masked with ``masks[i]`` when given (``ip saddr & 255.255.0.0 . ip daddr @set``)."""
    masks = masks or {}
    exprs: list[bytes] = []
    for field in fields:
        if field.dependency is not None and not set(field.dependency.exprs) <= set(exprs):
            exprs.extend(field.dependency.exprs)  # once: an inet table's ``meta nfproto`` for both addresses
    if len(fields) == 1:
        reg = REG_1
        exprs.append(fields[0].load(REG_1))
        if 0 in masks:
            exprs.append(_bitwise(REG_1, masks[0], bytes(len(masks[0]))))
    else:
        reg = next_reg = REG32_00
        for index, field in enumerate(fields):
            exprs.append(field.load(next_reg))
            if index in masks:
                exprs.append(_bitwise(next_reg, masks[index], bytes(len(masks[index]))))
            next_reg += (field.size + 3) // 4
    exprs.append(_lookup(set_name, reg, REG_VERDICT if verdict_map else None, negate))
    key = " . ".join(field.text + (f" & {_mask_text(masks[i])}" if i in masks else "") for i, field in enumerate(fields))
    op = "vmap " if verdict_map else ("!= " if negate else "")
    return Stmt(f"{key} {op}@{set_name}", tuple(exprs))


def _mask_text(mask: bytes) -> str:
    import ipaddress  # noqa: PLC0415

    return str(ipaddress.ip_address(mask))


def jump(chain: str) -> Stmt:
    return Stmt(f"jump {chain}", (_immediate_verdict(w.NFT_JUMP, chain),))


def goto(chain: str) -> Stmt:
    return Stmt(f"goto {chain}", (_immediate_verdict(w.NFT_GOTO, chain),))


def accept() -> Stmt:
    return Stmt("accept", (_immediate_verdict(w.NF_ACCEPT),))


def drop() -> Stmt:
    return Stmt("drop", (_immediate_verdict(w.NF_DROP),))


def return_() -> Stmt:
    return Stmt("return", (_immediate_verdict(w.NFT_RETURN),))


def dnat(family: int, ip: str, port: int) -> Stmt:
    target = f"[{ip}]:{port}" if family == 6 else f"{ip}:{port}"
    return Stmt(f"dnat {FAMILY_KEYWORD[family]} to {target}", (
        _immediate_data(REG_1, address_bytes(ip)),
        _immediate_data(REG_2, port_bytes(port)),
        _expr("nat", w.be32(1, NAT_DNAT), w.be32(2, NFPROTO_OF[family]), w.be32(3, REG_1), w.be32(5, REG_2),
              w.be32(7, NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED))))


def masquerade() -> Stmt:
    return Stmt("masquerade", (_expr("masq"),))


# ---------------------------------------------------------------- decoding

# (expression, attribute) pairs whose payload is a nested NFTA_DATA_*: compared decoded, so the
# flag bits the kernel sets on nested headers do not matter.
_DATA_ATTRS = {("cmp", 3), ("immediate", 2), ("bitwise", 4), ("bitwise", 5)}


def _data(payload: bytes) -> object:
    parsed = parse_attrs(payload)
    if w.DATA_VERDICT in parsed:
        verdict = parse_attrs(parsed[w.DATA_VERDICT])
        chain = verdict.get(w.VERDICT_CHAIN)
        return ("verdict", w.get_be32s(verdict[w.VERDICT_CODE]), chain.split(b"\0", 1)[0] if chain else None)
    return ("value", parsed.get(w.DATA_VALUE))


def canonical_exprs(blob: bytes) -> list[tuple[str, dict[int, object]]]:
    """A rule's expressions (the payload of NFTA_RULE_EXPRESSIONS) as (name, {attr: value})."""
    out = []
    for _type, elem in iter_attrs(blob):
        parts = parse_attrs(elem)
        name = parts.get(w.EXPR_NAME, b"").split(b"\0", 1)[0].decode()
        attrs: dict[int, object] = {}
        for key, value in parse_attrs(parts.get(w.EXPR_DATA, b"")).items():
            attrs[key] = _data(value) if (name, key) in _DATA_ATTRS else value
        out.append((name, attrs))
    return out


def rule_expressions(rule: NftRule) -> bytes:
    """The NFTA_RULE_EXPRESSIONS attribute of a rule."""
    return nested(w.RULE_EXPRESSIONS, *rule.exprs)


def rule_userdata(rule: NftRule) -> bytes:
    return attr(w.RULE_USERDATA, w.comment_udata(w.UDATA_RULE_COMMENT, rule.comment)) if rule.comment else b""
