"""The firewall plugin's rules (reference.md §5), as chains objects; pure, no kernel."""
from __future__ import annotations

from chains.owned import SharedChain
from chains.rule import Rule, parse_args, parse_conditions

FORWARD_CHAIN = "CNI-FORWARD"
FORWARD_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
STAGE1 = "CNI-ISOLATION-STAGE-1"
STAGE2 = "CNI-ISOLATION-STAGE-2"


def forward_chain() -> SharedChain:
    """CNI-FORWARD, jumped to first thing in FORWARD."""
    return SharedChain(table="filter", name=FORWARD_CHAIN, entry_chains=("FORWARD",),
                       entry_rules=(parse_conditions(["-m", "comment", "--comment", FORWARD_COMMENT]),), prepend=True)


def admin_chain(name: str) -> SharedChain:
    """The administrator's chain, jumped to first thing in CNI-FORWARD. Its rules are the admin's."""
    return SharedChain(table="filter", name=name, entry_chains=(FORWARD_CHAIN,),
                       entry_rules=(parse_conditions(["-m", "comment", "--comment", ADMIN_COMMENT]),), prepend=True)


def host_cidr(ip: str) -> str:
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def container_rules(ip: str) -> list[Rule]:
    """Accept the container's own traffic and the replies to it."""
    host = host_cidr(ip)
    return [parse_args(FORWARD_CHAIN, ["-d", host, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                                       "-j", "ACCEPT"]),
            parse_args(FORWARD_CHAIN, ["-s", host, "-j", "ACCEPT"])]


def isolation_comment(policy: str) -> str:
    return f"CNI firewall plugin rules (ingressPolicy: {policy})"


def isolation_chains(policy: str) -> tuple[SharedChain, SharedChain]:
    note = ["-m", "comment", "--comment", isolation_comment(policy)]
    stage1 = SharedChain(table="filter", name=STAGE1, entry_chains=("FORWARD",),
                         entry_rules=(parse_conditions(note),), prepend=True)
    stage2 = SharedChain(table="filter", name=STAGE2)
    return stage1, stage2


def isolation_rules(policy: str, bridge: str) -> tuple[list[Rule], list[Rule]]:
    """(rules inserted at the top of stage 1 and 2, the RETURN rules appended to each).

    Traffic leaving ``bridge`` for another interface goes to stage 2, where traffic entering any other
    isolated bridge from outside is dropped; ``isolated`` also drops traffic within the bridge.
    """
    note = ["-m", "comment", "--comment", isolation_comment(policy)]
    top = [parse_args(STAGE1, ["-i", bridge, "!", "-o", bridge, *note, "-j", STAGE2]),
           parse_args(STAGE2, ["-o", bridge, *note, "-j", "DROP"])]
    if policy == "isolated":
        top.append(parse_args(STAGE1, ["-i", bridge, "-o", bridge, *note, "-j", "DROP"]))
    returns = [parse_args(STAGE1, [*note, "-j", "RETURN"]), parse_args(STAGE2, [*note, "-j", "RETURN"])]
    return top, returns
