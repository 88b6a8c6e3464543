"""portmap's ``conditionsV4`` / ``conditionsV6`` in nft syntax, turned into statements.

The reference hands its conditions to ``nft`` as text; we write expressions ourselves, so we accept
the matches such conditions are used for, and refuse anything else by name (CNI code 7) instead of
guessing::

    ip saddr 10.0.0.0/8         ip6 daddr != fd00::/8       iifname "eth0"      oifname != eth1
    meta mark 0x10              mark != 0x10                meta iifname eth0

Conditions are a list of strings, joined with spaces (``["ip", "saddr", "!=", "10.0.0.0/8"]`` and
``["ip saddr != 10.0.0.0/8"]`` are the same). A list whose first string starts with ``-`` or ``!``
is iptables syntax (as the reference classifies them).
"""
from __future__ import annotations

from chains.nft import expr as e

SUPPORTED = ('ip|ip6 saddr|daddr [!=] ADDRESS[/PREFIX]', 'iifname|oifname [!=] NAME', 'meta mark|mark [!=] VALUE')


def is_iptables_syntax(conditions: list[str] | None) -> bool:
    first = next((item.strip() for item in conditions or [] if item.strip()), "")
    return first[:1] in ("-", "!")


def _tokens(conditions: list[str]) -> list[str]:
    import shlex  # noqa: PLC0415 - only configs with conditions pay for it

    try:
        return shlex.split(" ".join(conditions))
    except ValueError as exc:
        raise ValueError(f"cannot read conditions {conditions!r}: {exc}") from None


def parse(conditions: list[str], family: int) -> list[e.Stmt]:
    """Statements for ``conditions`` in a table of ``family``; ValueError naming what is not supported."""
    if not conditions:
        return []
    tokens = _tokens(conditions)
    stmts: list[e.Stmt] = []
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word == "meta" and i + 1 < len(tokens) and tokens[i + 1] in ("mark", "iifname", "oifname"):
            i += 1
            word = tokens[i]
        if word in ("ip", "ip6") and i + 1 < len(tokens) and tokens[i + 1] in ("saddr", "daddr"):
            wanted = 4 if word == "ip" else 6
            if wanted != family:
                raise ValueError(f"conditionsV{family} match {word} addresses")
            which = tokens[i + 1]
            negate, value, i = _operand(tokens, i + 2, f"{word} {which}")
            stmts.append(e.address(family, which, value, negate))
        elif word in ("iifname", "oifname"):
            negate, value, i = _operand(tokens, i + 1, word)
            stmts.append(e.interface(word[:3], value, negate))
        elif word == "mark":
            negate, value, i = _operand(tokens, i + 1, "mark")
            try:
                stmts.append(e.mark(int(value, 0), negate=negate))
            except ValueError:
                raise ValueError(f"invalid mark {value!r} in conditions") from None
        else:
            raise ValueError(f"unsupported nftables condition at {' '.join(tokens[i:i + 3])!r} "
                             f"(supported: {'; '.join(SUPPORTED)})")
    return stmts


def _operand(tokens: list[str], i: int, what: str) -> tuple[bool, str, int]:
    """(negated, value, index after the value) for the match ``what`` whose operator starts at ``i``."""
    negate = False
    if i < len(tokens) and tokens[i] in ("!=", "=="):
        negate = tokens[i] == "!="
        i += 1
    if i >= len(tokens):
        raise ValueError(f"condition {what!r} has no value")
    return negate, tokens[i], i + 1

