"""Whole tables in iptables-save syntax, for logs, debugging and tests."""
from __future__ import annotations

from chains.table import Tx, read


def table_text(family: int, table: str) -> str:
    """``table`` of the calling thread's network namespace as ``iptables-legacy-save -t
    table`` prints it, minus its ``# Generated``/``# Completed`` comment lines."""
    return read(family, table, lambda tx: tx_table_text(tx))


def tx_table_text(tx: Tx) -> str:
    """The table as seen by ``tx`` (including what it staged so far)."""
    chains = tx.chains()
    lines = [f"*{tx.table}"]
    for chain in chains:
        policy = tx.policy(chain)
        if policy is None:
            lines.append(f":{chain} - [0:0]")
        else:
            verdict, packets, octets = policy
            lines.append(f":{chain} {verdict} [{packets}:{octets}]")
    for chain in chains:
        lines += tx.rules_text(chain)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
