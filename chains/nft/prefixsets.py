"""Subnet matches on per-container pairs without interval sets: one hash set per prefix length.

A rule such as "masquerade what comes from the container's own subnet to the container" needs a
pair (subnet, address) per container. The kernel's interval sets of concatenations can hold
that, but each change rebuilds their lookup tables (at 5,000 elements a delete took ~80 ms on the
VM). Here the subnet side is masked instead: for every prefix length in use there is a hash set of
``network . address`` pairs and one rule ``ip saddr & <mask> . ip daddr @<name>_<length> <verdict>``,
so adding, finding and removing a pair is one hash operation whatever the set holds. A prefix
length's set and rule are created with its first pair and removed with its last (whether others
are left is read from the first answer of a dump of the set).
"""
from __future__ import annotations

import ipaddress

from chains.nft import expr as e
from chains.nft import wire as w
from chains.nft.tx import Chain, Map, Table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from chains.nft.tx import Tx

ADDRESS_TYPE = {4: w.TYPE_IPADDR, 6: w.TYPE_IP6ADDR}


class PrefixPairSets:
    """Pairs (``masked`` field's network, ``exact`` field's address) of one family in ``chain``.

    ``masked`` and ``exact`` are "saddr" or "daddr"; ``leading`` are statements every rule starts
    with (``ct status dnat``), ``verdict`` the one it ends with; ``order`` says which field comes
    first in the key (the masked one, or the exact one)."""

    def __init__(self, table: Table, family: int, chain: str, prefix: str, masked: str, exact: str,
                 verdict: e.Stmt, leading: tuple[e.Stmt, ...] = (), masked_first: bool = True) -> None:
        self.table, self.family, self.chain, self.prefix = table, family, Chain(table, chain), prefix
        self.masked, self.exact, self.verdict, self.leading = masked, exact, verdict, leading
        self.masked_first = masked_first
        self.inet = table.family == w.NFPROTO_INET

    def set_for(self, length: int) -> Map:
        return Map(self.table, f"{self.prefix}_{length}", (ADDRESS_TYPE[self.family],) * 2, verdicts=False)

    def rule_for(self, length: int) -> e.NftRule:
        bits = 32 if self.family == 4 else 128
        mask = ipaddress.ip_network(f"{'0.0.0.0' if self.family == 4 else '::'}/{length}").netmask
        masked = e.address_field(self.family, self.masked, self.inet)
        exact = e.address_field(self.family, self.exact, self.inet)
        fields = (masked, exact) if self.masked_first else (exact, masked)
        stmt = e.lookup(fields, self.set_for(length).name,
                        masks={0 if self.masked_first else 1: mask.packed} if length < bits else None)
        return e.NftRule(self.chain.name, [*self.leading, stmt, self.verdict])

    def _key(self, network: str, address: str) -> tuple[int, bytes, str]:
        net = ipaddress.ip_network(network, strict=False)
        ip = ipaddress.ip_address(address)
        if net.version != self.family or ip.version != self.family:
            raise ValueError(f"{network} . {address} is not an IPv{self.family} pair")
        masked, exact = w.padded(net.network_address.packed), w.padded(ip.packed)
        key = masked + exact if self.masked_first else exact + masked
        # str() rather than f-string formatting: ipaddress's __format__ costs ~1 ms on first use
        shown = " . ".join((str(net), str(ip)) if self.masked_first else (str(ip), str(net)))
        return net.prefixlen, key, shown

    def present(self, tx: Tx, network: str, address: str) -> bool:
        length, key, _shown = self._key(network, address)
        return tx.has_map(self.set_for(length)) and tx.element(self.set_for(length), key) is not None

    def add(self, tx: Tx, network: str, address: str, fresh: bool = False) -> None:
        """Add the pair (and its prefix length's set and rule when it is the first)."""
        length, key, shown = self._key(network, address)
        set_ = self.set_for(length)
        if fresh or not tx.has_map(set_):
            tx.add_map(set_)
            tx.add_rule(self.table, self.rule_for(length))
        elif tx.element(set_, key) is not None:
            return
        tx.add_element(set_, key, shown)

    def remove(self, tx: Tx, network: str, address: str) -> bool:
        """Remove the pair if it is there (and its prefix length's set and rule with the last); True if it was."""
        length, key, shown = self._key(network, address)
        set_ = self.set_for(length)
        if not tx.has_map(set_) or tx.element(set_, key) is None:
            return False
        tx.delete_element(set_, key, shown)
        if not tx.holds_more_than(set_, tx.elements_deleted.get(set_.name, 0)):
            for rule in tx.rules(self.chain):
                if rule.lookup_set() == set_.name:
                    tx.delete_rule(self.chain, rule.handle)
            tx.delete_map(set_)
        return True
