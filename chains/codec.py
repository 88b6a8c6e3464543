"""Convert between the rule model and libiptc rule entries.

Building: the IP header part is written straight into the entry struct (as the iptables
binary does; python-iptables' setters differ from it in small ways, e.g. ip6 masks are not
applied and ``eth+`` loses its ``+``), the matches and target go through python-iptables'
extension objects, which drive the libxtables parsers. Options are handed to the parsers
one argument each, so no value is ever re-split or re-interpreted, and each extension is
final-checked right after its own options (python-iptables' ``final_check`` re-parses the
saved text, which mangles a comment containing ``'``).

Decoding: the header is read from the struct and printed like iptables-save; each
extension's own ``save`` function prints its options, which are then parsed into the
model. The text is exactly what iptables-legacy-save prints for the rule.
"""
from __future__ import annotations

import ctypes
import os
import _socket as socket  # the C module: socket.py costs ~3 ms to import
import struct
import sys
from collections.abc import Callable
from types import ModuleType

from chains.errors import ChainsError
from chains.extensions import MATCH_SPECS, TARGET_SPECS, ExtensionSpec
from chains.iptc_loader import load_iptc
from chains.libiptc import Handle
from chains.rule import VERDICTS, Match, Rule, Target, decoded_match, decoded_rule, decoded_target
from chains.values import protocol_name, protocol_number

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_IFNAMSIZ = 16
# ipt_ip / ip6t_ip6 invflags (shared values) and flags
_INV_VIA_IN, _INV_VIA_OUT, _INV_SRCIP, _INV_DSTIP, _INV_FRAG, _INV_PROTO = 0x01, 0x02, 0x08, 0x10, 0x20, 0x40
_F4_FRAG, _F4_GOTO = 0x01, 0x02
_F6_PROTO, _F6_GOTO = 0x01, 0x04


class Decoded:
    """A rule read from a table: the model and the exact iptables-save line."""

    __slots__ = ("rule", "text")

    def __init__(self, rule: Rule, text: str) -> None:
        self.rule = rule
        self.text = text


class _Extensions:
    """python-iptables pieces, loaded on first use."""

    def __init__(self) -> None:
        iptc = load_iptc()
        self.iptc: ModuleType = iptc
        self.entry_types = {4: iptc.ip4tc.ipt_entry, 6: iptc.ip6tc.ip6t_entry}
        self.rule_types = {4: iptc.Rule, 6: iptc.Rule6}
        self.xt_entry_match = iptc.xtables.xt_entry_match
        self.xt_entry_target = iptc.xtables.xt_entry_target
        self.xt_align = iptc.xtables.xt_align
        self.Match = iptc.Match
        self.Target = _target_class(iptc.Target)


def _target_class(base: type) -> type:
    class ModelTarget(base):  # type: ignore[misc]
        """A Target whose kind (jump/verdict vs. extension) is decided by the caller.

        python-iptables decides it by instantiating and scanning every table of the
        family (reading them, and keeping cached handles around); we know the answer.
        """

        def __init__(self, rule: Any, *, standard: bool, name: str | None = None, target: Any = None) -> None:
            object.__setattr__(self, "_standard", standard)
            super().__init__(rule, name=name, target=target)

        def _is_standard_target(self) -> bool:
            return bool(self._standard)

    return ModelTarget


_loaded: list[_Extensions] = []


def _extensions() -> _Extensions:
    if not _loaded:
        _loaded.append(_Extensions())
    return _loaded[0]


# --------------------------------------------------------------------------- building


class Entry:
    """A rule as libiptc takes it: the entry bytes and the comparison mask for -D/-C."""

    __slots__ = ("data", "mask", "keepalive")

    def __init__(self, data: ctypes.Array[ctypes.c_ubyte], mask: ctypes.Array[ctypes.c_ubyte],
                 keepalive: object) -> None:
        self.data = data
        self.mask = mask
        self.keepalive = keepalive  # python-iptables objects owning buffers the entry was built from


def build_entry(family: int, rule: Rule, *, target_is_chain: bool) -> Entry:
    """Encode ``rule`` for libiptc. ``target_is_chain``: its target names a chain to jump to."""
    ext = _extensions()
    pyrule = ext.rule_types[family]()
    _write_header(family, pyrule.entry, rule)
    for match in rule.matches:
        pyrule.add_match(_build_match(ext, pyrule, match))
    pyrule.target = _build_target(ext, pyrule, rule.target, target_is_chain)
    data = pyrule.rule
    if data is None:
        raise ChainsError(f"cannot encode rule [{rule}]")
    return Entry(data, pyrule.mask, pyrule)


def _write_header(family: int, entry: Any, rule: Rule) -> None:
    ip = entry.ip if family == 4 else entry.ipv6
    invflags = 0
    flags = 0
    for name, address_field, mask_field, inverse in (("src", "src", "smsk", _INV_SRCIP), ("dst", "dst", "dmsk", _INV_DSTIP)):
        value = getattr(rule, name)
        if value is None:
            continue
        address, mask = _address_and_mask(family, value)
        if family == 4:
            getattr(ip, address_field).s_addr = struct.unpack("=I", address)[0]
            getattr(ip, mask_field).s_addr = struct.unpack("=I", mask)[0]
        else:
            getattr(ip, address_field).s6_addr[:] = list(address)
            getattr(ip, mask_field).s6_addr[:] = list(mask)
        if name in rule.negated:
            invflags |= inverse
    for name, iface_field, inverse in (("in_iface", "iniface", _INV_VIA_IN), ("out_iface", "outiface", _INV_VIA_OUT)):
        value = getattr(rule, name)
        if value is None:
            continue
        name_bytes, mask_bytes = _interface_and_mask(value)
        setattr(ip, iface_field, name_bytes)
        setattr(ip, iface_field + "_mask", mask_bytes)
        if name in rule.negated:
            invflags |= inverse
    if rule.protocol is not None:
        ip.proto = protocol_number(rule.protocol)
        if family == 6:
            flags |= _F6_PROTO
        if "protocol" in rule.negated:
            invflags |= _INV_PROTO
    if rule.fragment:
        flags |= _F4_FRAG
        if "fragment" in rule.negated:
            invflags |= _INV_FRAG
    if rule.target.goto:
        flags |= _F4_GOTO if family == 4 else _F6_GOTO
    ip.flags = flags
    ip.invflags = invflags


def _address_and_mask(family: int, network: str) -> tuple[bytes, bytes]:
    address, _, prefix_text = network.partition("/")
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        packed = socket.inet_pton(af, address)
    except OSError:
        raise ChainsError(f"address {network} does not belong to IPv{family}") from None
    bits = len(packed) * 8
    prefix = int(prefix_text) if prefix_text else bits
    mask = (((1 << bits) - 1) << (bits - prefix)) & ((1 << bits) - 1)
    return packed, mask.to_bytes(bits // 8, "big")


def _interface_and_mask(name: str) -> tuple[bytes, bytes]:
    """Like xtables_parse_interface: the mask covers the NUL, or stops before a final +."""
    raw = name.encode()
    covered = len(raw) - 1 if raw.endswith(b"+") else len(raw) + 1
    return raw.ljust(_IFNAMSIZ, b"\0"), (b"\xff" * covered).ljust(_IFNAMSIZ, b"\0")


def _parse_option(extension: Any, pyrule: Any, name: str, value: str | None, invert: bool) -> None:
    """Feed one option to the extension's parser, exactly one argument, no '!' guessing.

    (python-iptables' public ``parse`` reads a value starting with "!" as a negation.)
    """
    if value == "":
        # python-iptables would pass NULL for an empty argument, which the parsers dereference
        raise ChainsError(f"{extension._name}: --{name} needs a non-empty value")
    args = [name.encode()] if value is None else [name.encode(), value.encode()]
    argv = (ctypes.c_char_p * (len(args) + 1))(*args)
    try:
        extension._parse(argv, ctypes.c_int(1 if invert else 0), ctypes.pointer(pyrule.entry))
    except Exception as error:  # XTablesError, ValueError, AttributeError from the parsers
        shown = f"--{name}" if value is None else f"--{name} {value!r}"
        raise ChainsError(f"{extension._name}: cannot use {shown}: {error}") from error


def _build_match(ext: _Extensions, pyrule: Any, match: Match) -> Any:
    try:
        built = ext.Match(pyrule, name=match.name)
    except Exception as error:
        raise ChainsError(f"match extension {match.name} is not available: {error}") from error
    for name, value in match.options:
        _parse_option(built, pyrule, name, value, name in match.negated)
    try:
        built._final_check()
    except Exception as error:
        raise ChainsError(f"match {match.name}: {error}") from error
    return built


def _build_target(ext: _Extensions, pyrule: Any, target: Target, is_chain: bool) -> Any:
    standard = is_chain or target.name in VERDICTS or not target.name
    if standard:
        return ext.Target(pyrule, standard=True, name=target.name)
    try:
        built = _with_family_registration(pyrule, target.name,
                                          lambda: ext.Target(pyrule, standard=False, name=target.name))
    except Exception as error:
        raise ChainsError(f"target extension {target.name} is not available: {error}") from error
    for name, value in target.options:
        _parse_option(built, pyrule, name, value, False)
    try:
        built._final_check()
    except Exception as error:
        raise ChainsError(f"target {target.name}: {error}") from error
    return built


# --------------------------------------------------------------------------- decoding


def decode(handle: Handle, chain: str, entry_address: int) -> Decoded:
    """The rule at ``entry_address`` (from :meth:`Handle.entries`) as model and text."""
    ext = _extensions()
    family = handle.family
    entry = ext.entry_types[family].from_address(entry_address)
    ip = entry.ip if family == 4 else entry.ipv6
    header, header_text = _decode_header(family, ip)
    matches: list[Match] = []
    texts = [f"-A {chain}", header_text]
    offset = ctypes.sizeof(entry)  # matches start right after the (aligned) entry struct
    offset = ext.xt_align(offset)
    pyrule = ext.rule_types[family]()
    while offset < entry.target_offset:
        raw = ext.xt_entry_match.from_address(entry_address + offset)
        size = raw.u.match_size
        if size <= 0:
            raise ChainsError(f"corrupt rule entry in chain {chain}")
        match, text = _decode_match(ext, pyrule, raw, ip)
        matches.append(match)
        texts.append(text)
        offset += size
    goto_flag = _F4_GOTO if family == 4 else _F6_GOTO
    target, target_text = _decode_target(ext, handle, pyrule, entry_address, entry, ip, bool(ip.flags & goto_flag))
    texts.append(target_text)
    rule = decoded_rule(chain, target=target, matches=tuple(matches), **header)
    return Decoded(rule, "".join(texts))


def _decode_header(family: int, ip: Any) -> tuple[dict[str, object], str]:
    values: dict[str, object] = {}
    negated: set[str] = set()
    text = ""
    inv = ip.invflags
    for name, flag, address_field, mask_field, inverse in (
        ("src", "-s", "src", "smsk", _INV_SRCIP),
        ("dst", "-d", "dst", "dmsk", _INV_DSTIP),
    ):
        shown = _network_text(family, getattr(ip, address_field), getattr(ip, mask_field), bool(inv & inverse))
        if shown is not None:
            values[name] = shown
            if inv & inverse:
                negated.add(name)
            text += f"{' !' if inv & inverse else ''} {flag} {shown}"
    for name, letter, iface_field, inverse in (("in_iface", "i", "iniface", _INV_VIA_IN),
                                                ("out_iface", "o", "outiface", _INV_VIA_OUT)):
        shown = _interface_text(getattr(ip, iface_field), getattr(ip, iface_field + "_mask"))
        if shown is not None:
            values[name] = shown
            if inv & inverse:
                negated.add(name)
            text += f"{' !' if inv & inverse else ''} -{letter} {shown}"
    if ip.proto:
        values["protocol"] = protocol_name(ip.proto)
        if inv & _INV_PROTO:
            negated.add("protocol")
        text += f"{' !' if inv & _INV_PROTO else ''} -p {values['protocol']}"
    if family == 4 and ip.flags & _F4_FRAG:
        values["fragment"] = True
        if inv & _INV_FRAG:
            negated.add("fragment")
        text += f"{' !' if inv & _INV_FRAG else ''} -f"
    values["negated"] = frozenset(negated)
    return values, text


def _network_text(family: int, address: Any, mask: Any, inverted: bool) -> str | None:
    """print_ip / print_ip6 of iptables-save."""
    if family == 4:
        addr = struct.pack("=I", address.s_addr)
        msk = struct.pack("=I", mask.s_addr)
    else:
        addr = bytes(address.s6_addr)
        msk = bytes(mask.s6_addr)
    bits = len(addr) * 8
    mask_value = int.from_bytes(msk, "big")
    inverse = ~mask_value & ((1 << bits) - 1)
    prefix = bits - inverse.bit_length() if not inverse & (inverse + 1) else -1
    if family == 4 and not mask_value and not any(addr) and not inverted:
        return None
    if family == 6 and prefix == 0 and not inverted:
        return None
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    shown = socket.inet_ntop(af, addr)
    return f"{shown}/{prefix}" if prefix >= 0 else f"{shown}/{socket.inet_ntop(af, msk)}"


def _interface_text(name: bytes, mask: bytes) -> str | None:
    """print_iface of iptables-save."""
    name = bytes(name).ljust(_IFNAMSIZ, b"\0")
    mask = bytes(mask).ljust(_IFNAMSIZ, b"\0")
    if mask[0] == 0:
        return None
    out = bytearray()
    for index in range(_IFNAMSIZ):
        if mask[index]:
            if name[index]:
                out.append(name[index])
        else:
            if name[index - 1]:
                out += b"+"
            break
    return out.decode(errors="replace")


def _decode_match(ext: _Extensions, pyrule: Any, raw: Any, ip: Any) -> tuple[Match, str]:
    name = raw.u.user.name.decode(errors="replace")
    try:
        built = ext.Match(pyrule, match=raw)
    except Exception:
        return decoded_match(name, (("undecodable", None),), frozenset()), f" -m {name} [unsupported]"
    if built.size != raw.u.match_size:
        return (decoded_match(name, (("unsupported-revision", str(raw.u.user.revision)),), frozenset()),
                f" -m {built.name} [unsupported revision]")
    saved = _saved_text(built, ip)
    options, negated = parse_saved_options(saved, MATCH_SPECS.get(built.name))
    return decoded_match(built.name, options, negated), f" -m {built.name}{saved}"


def _decode_target(ext: _Extensions, handle: Handle, pyrule: Any, entry_address: int, entry: Any, ip: Any,
                   goto: bool) -> tuple[Target, str]:
    name = handle.target_name(entry_address)
    raw = ext.xt_entry_target.from_address(entry_address + entry.target_offset)
    raw_name = raw.u.user.name.decode(errors="replace")
    flag = "-g" if goto else "-j"
    if not name:
        return decoded_target("", (), False), ""
    if name in VERDICTS or raw_name == "" or (raw_name == name and handle.is_chain(name)):
        return decoded_target(name, (), goto), f" {flag} {name}"
    try:
        built = _with_family_registration(pyrule, raw_name, lambda: ext.Target(pyrule, standard=False, target=raw))
    except Exception:
        return decoded_target(name, (("undecodable", None),), goto), f" -j {name} [unsupported]"
    if built.size != raw.u.target_size:
        return (decoded_target(name, (("unsupported-revision", str(raw.u.user.revision)),), goto),
                f" -j {built.name} [unsupported revision]")
    saved = _saved_text(built, ip)
    options, _ = parse_saved_options(saved, TARGET_SPECS.get(built.name))
    return decoded_target(built.name, options, goto), f" -j {built.name}{saved}"


def _with_family_registration(pyrule: Any, name: str, create: Callable[[], Any]) -> Any:
    """``create()`` a python-iptables target object for ``name`` in the rule's family,
    first making sure libxtables can have the target for this family (see below)."""
    nfproto = pyrule.nfproto
    library = _extension_library(nfproto, name)
    if library is not None:
        families = _library_families.setdefault(library, set())
        if families and nfproto not in families:
            _load_private_copy(nfproto, library)
    built = create()
    if library is not None:
        _library_families[library].add(nfproto)
    return built


# libxtables registers a family-specific target only for the family selected when its
# library is loaded, and a library is loaded once per process: after IPv4 used DNAT
# (libxt_DNAT.so, like SNAT and MASQUERADE a link to libxt_NAT.so) an IPv6 lookup of any of
# them fails, the failure is cached by name for every family (libxtables' "notargets"
# list), and calling the library's init again would exit the process ("already
# registered"). So before a library already loaded for one family serves the other, a
# private copy of the file is loaded: a separate library instance whose constructor
# registers this family's variants (duplicates of family-neutral ones are harmless).
_library_families: dict[str, set[int]] = {}  # library file -> families it serves
_private_copies: dict[tuple[int, str], tuple[int, ctypes.CDLL]] = {}
_library_of: dict[tuple[int, str], str | None] = {}


def _load_private_copy(nfproto: int, library_path: str) -> None:
    with open(library_path, "rb") as original:
        image = original.read()
    fd = os.memfd_create(f"xtables-{os.path.basename(library_path)}-{nfproto}")
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view):]
        _extensions().iptc.xtables.xtables._xtables_set_nfproto(nfproto)  # what the constructor registers for
        library = ctypes.CDLL(f"/proc/self/fd/{fd}")
    except OSError as error:
        os.close(fd)
        raise ChainsError(f"cannot load {library_path} for a second address family: {error}") from error
    _private_copies[(nfproto, library_path)] = (fd, library)  # must stay loaded for good
    _library_families[library_path].add(nfproto)


def _extension_library(nfproto: int, name: str) -> str | None:
    """The file libxtables loads target ``name`` from for this family, as it searches."""
    key = (nfproto, name)
    if key not in _library_of:
        xtables = _extensions().iptc.xtables
        family_prefix = "libipt_" if nfproto == xtables.NFPROTO_IPV4 else "libip6t_"
        _library_of[key] = None
        for file_name in (f"{family_prefix}{name}.so", f"libxt_{name}.so"):
            path = os.path.join(xtables._xtables_libdir, file_name)
            if os.path.exists(path):
                _library_of[key] = os.path.realpath(path)
                break
    return _library_of[key]


def _saved_text(extension: Any, ip: Any) -> str:
    """What the extension's ``save`` prints, captured from C stdout.

    libxtables extensions print with printf; like python-iptables we point fd 1 at a pipe
    for the call, but read all of it (python-iptables stops at 1 KiB). Its C wrapper ends
    the output with a newline of its own, which is dropped.
    """
    module = extension._module
    if not module or not module.save:
        return ""
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    read_end, write_end = os.pipe()
    try:
        os.dup2(write_end, 1)
        try:
            extension._xt.save(module, ip, extension._ptr)  # the wrapper fflush()es stdout
        finally:
            os.dup2(saved_stdout, 1)
        os.close(write_end)
        write_end = -1
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(saved_stdout)
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    text = b"".join(chunks).decode(errors="replace")
    return text[:-1] if text.endswith("\n") else text  # python-iptables' wrapper adds one


def saved_tokens(text: str) -> list[tuple[str, bool]]:
    """Split save output into words; double-quoted words are unescaped and flagged."""
    tokens: list[tuple[str, bool]] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == " ":
            index += 1
        elif char == '"':
            index += 1
            word = []
            while index < length and text[index] != '"':
                if text[index] == "\\" and index + 1 < length:
                    index += 1
                word.append(text[index])
                index += 1
            index += 1  # closing quote
            tokens.append(("".join(word), True))
        else:
            end = text.find(" ", index)
            end = length if end < 0 else end
            tokens.append((text[index:end], False))
            index = end
    return tokens


def parse_saved_options(text: str, spec: ExtensionSpec | None = None
                        ) -> tuple[tuple[tuple[str, str | None], ...], frozenset[str]]:
    """``' ! --dport 80 --comment "a b"'`` -> ((("dport", "80"), ("comment", "a b")), {"dport"}).

    With the extension's ``spec``, a known option that takes a value takes exactly the
    next word, whatever it looks like: iptables-save prints a comment such as ``--x``
    without quotes. Other words after an option are its value (joined by spaces).
    """
    options: list[tuple[str, list[str]]] = []
    negated: set[str] = set()
    pending_bang = False
    value_expected = False
    for word, quoted in saved_tokens(text):
        if value_expected:
            options[-1][1].append(word)
            value_expected = False
        elif not quoted and word == "!":
            pending_bang = True
        elif not quoted and word.startswith("--") and len(word) > 2:
            name = word[2:]
            options.append((name, []))
            if pending_bang:
                negated.add(name)
            pending_bang = False
            option = spec.option(name) if spec else None
            value_expected = option is not None and option.takes_value
        elif options:
            options[-1][1].append(word)
        else:
            options.append(("", [word]))  # a value without option name: keep it, never equal ours
    return tuple((name, " ".join(values) if values else None) for name, values in options), frozenset(negated)
