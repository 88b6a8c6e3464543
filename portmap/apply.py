"""Turning portmap's generated rules into one transaction per table, and taking them out again.

Each ADD and DEL is one libiptc read and one commit per family, under the xtables lock. Shared
chains (``CNI-HOSTPORT-*``) are created with the first container that needs them and removed in the
same commit that removes the last one that did, decided from the table itself under the lock (no
entry jumps left in ``CNI-HOSTPORT-DNAT``, nothing jumping to ``CNI-HOSTPORT-SETMARK``), so two
parallel DELs can never both keep, nor an ADD and a DEL both lose, them.
"""
from __future__ import annotations

from chains import table
from chains.owned import OwnedChain, SharedChain
from chains.rule import parse_args, parse_conditions
from cni.errors import INVALID_CONFIG, CNIError
from portmap import names, rules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chains.table import Tx
    from portmap.config import PortMapConf
    from portmap.rules import Address

TOPLEVEL_ENTRY_CHAINS = ("PREROUTING", "OUTPUT")


def _toplevel() -> SharedChain:
    return SharedChain(table="nat", name=names.TOPLEVEL_DNAT, entry_chains=TOPLEVEL_ENTRY_CHAINS,
                       entry_rules=(parse_conditions(rules.toplevel_jump()[:-2]),))


def _setmark(mark: int) -> SharedChain:
    body = tuple(parse_args(names.SETMARK, args) for args in rules.setmark_body(mark))
    return SharedChain(table="nat", name=names.SETMARK, body=body)


def _masq(mark: int) -> SharedChain:
    body = tuple(parse_args(names.MASQ, args) for args in rules.masq_body(mark))
    return SharedChain(table="nat", name=names.MASQ, entry_chains=("POSTROUTING",),
                       entry_rules=(parse_conditions(rules.masq_jump()[:-2]),), body=body, prepend=True)


def container_chain(conf: PortMapConf, network: str, container_id: str, family: int,
                    address: Address) -> OwnedChain:
    name = names.dnat_chain(network, container_id)
    entry = tuple(parse_conditions(args[:-2]) for args in rules.entry_rules(conf, network, container_id, family))
    body = tuple(parse_args(name, args) for args in rules.dnat_body(conf, family, address))
    return OwnedChain(table="nat", name=name, entry_chains=(names.TOPLEVEL_DNAT,), entry_rules=entry, body=body)


def validate(conf: PortMapConf, network: str, container_id: str, addresses: dict[int, Address]) -> None:
    """Build every rule once before anything is written: a value the model rejects fails here."""
    try:
        for family, address in addresses.items():
            container_chain(conf, network, container_id, family, address)
        for family, extra in ((4, conf.conditionsV4 or []), (6, conf.conditionsV6 or [])):
            pinned = parse_conditions(extra).family  # an IPv4 address in conditionsV6 would fail mid-commit
            if pinned not in (None, family):
                raise ValueError(f"conditionsV{family} match IPv{pinned} addresses")
    except ValueError as exc:
        raise CNIError(INVALID_CONFIG, f"invalid portmap config: {exc}") from None


def record_fields(conf: PortMapConf, addresses: dict[int, Address]) -> dict[str, Any]:
    """Nothing beyond the families: every chain here is found by its name."""
    return {}


def forward(conf: PortMapConf, network: str, container_id: str, family: int, address: Address,
            previous: dict[str, Any] | None = None) -> list[str]:
    """Install (or replace) the container's DNAT chain and the shared chains it needs, in one commit.

    (``previous``, the earlier ADD's record, is not needed: the chain is replaced whole.)"""
    owned = container_chain(conf, network, container_id, family, address)

    def stage(tx: Tx) -> None:
        if conf.snat and conf.externalSetMarkChain is None:
            _setmark(conf.mark).ensure(tx)
            _masq(conf.mark).ensure(tx)
        if conf.externalSetMarkChain is not None and not tx.has_chain(conf.externalSetMarkChain):
            raise CNIError(INVALID_CONFIG, f"externalSetMarkChain {conf.externalSetMarkChain} not found in "
                                           f"{'ip6tables' if family == 6 else 'iptables'} table nat")
        _toplevel().ensure(tx)
        owned.ensure(tx)

    table.apply(family, "nat", stage)
    return []


def unforward(network: str, container_id: str, family: int, record: dict[str, Any] | None = None,
              mappings: list[Any] | None = None) -> list[str]:
    """Remove the container's chain and its jumps; the shared chains too if nobody needs them now.

    The chain is found by its name alone, so neither the record nor the mappings are needed."""
    owned = OwnedChain(table="nat", name=names.dnat_chain(network, container_id),
                       entry_chains=(names.TOPLEVEL_DNAT,))

    def stage(tx: Tx) -> None:
        owned.remove(tx)
        remove_unused_shared(tx)

    table.apply(family, "nat", stage)
    return []


def remove_unused_shared(tx: Tx) -> None:
    if tx.has_chain(names.TOPLEVEL_DNAT) and tx.is_empty(names.TOPLEVEL_DNAT):
        _toplevel().remove(tx)
    if tx.has_chain(names.SETMARK) and tx.references(names.SETMARK) == 0:
        SharedChain(table="nat", name=names.SETMARK).remove(tx)
        SharedChain(table="nat", name=names.MASQ, entry_chains=("POSTROUTING",)).remove(tx)


def check(conf: PortMapConf, network: str, container_id: str, family: int, address: Address) -> list[str]:
    owned = container_chain(conf, network, container_id, family, address)

    def inspect(tx: Tx) -> list[str]:
        problems = owned.check(tx)
        problems += _toplevel().check(tx)
        if conf.snat and conf.externalSetMarkChain is None:
            problems += _setmark(conf.mark).check(tx) + _masq(conf.mark).check(tx)
        return problems

    return table.read(family, "nat", inspect)


def presence(network: str, container_id: str, family: int) -> list[str]:
    """Without the runtime's mappings: only whether the container's chain exists."""
    chain = names.dnat_chain(network, container_id)
    if table.read(family, "nat", lambda tx: tx.has_chain(chain)):
        return []
    return [f"chain {chain} not found in table nat"]


def status() -> None:
    """Whether the legacy nat table can be read (raises when it cannot)."""
    table.read(4, "nat", lambda tx: tx.has_chain("PREROUTING"))
