"""The firewall plugin's rules (reference.md §5, iptables backend), as chains Rules; pure, no kernel.

Table ``filter``, the same in both families::

    FORWARD      -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)"
                     -j CNI-ISOLATION-STAGE-1                     (only with an isolating ingressPolicy)
    FORWARD      -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
    CNI-FORWARD  -m comment --comment "CNI firewall plugin admin overrides" -j <admin chain>
    CNI-FORWARD  -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   (per address)
    CNI-FORWARD  -s <ip>/32 -j ACCEPT

    CNI-ISOLATION-STAGE-1  -i <br> -o <br> ... (ingressPolicy: isolated) -j DROP   (isolated only)
    CNI-ISOLATION-STAGE-1  -i <br> ! -o <br> ... (ingressPolicy: <policy>) -j CNI-ISOLATION-STAGE-2
    CNI-ISOLATION-STAGE-1  ... (ingressPolicy: same-bridge|isolated) -j RETURN
    CNI-ISOLATION-STAGE-2  -o <br> ... (ingressPolicy: same-bridge|isolated) -j DROP
    CNI-ISOLATION-STAGE-2  ... (ingressPolicy: same-bridge|isolated) -j RETURN

Traffic leaving an isolated bridge for another interface goes through stage 2, which drops it if it
is headed into any isolated bridge: containers of one bridge cannot reach another bridge's.
"""
from __future__ import annotations

from chains.rule import Rule, parse_args, to_args
from firewall.prevresult import host_cidr

FORWARD = "FORWARD"
FORWARD_CHAIN = "CNI-FORWARD"
DEFAULT_ADMIN_CHAIN = "CNI-ADMIN"
STAGE1 = "CNI-ISOLATION-STAGE-1"
STAGE2 = "CNI-ISOLATION-STAGE-2"

FORWARD_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
# The rules every isolating policy shares carry one comment, so two policies never duplicate them.
SHARED_ISOLATION_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)"

OPEN = "open"
SAME_BRIDGE = "same-bridge"
ISOLATED = "isolated"
ISOLATING_POLICIES = (SAME_BRIDGE, ISOLATED)
# Chains the plugin creates itself: none of them may be used as the admin chain.
OWN_CHAINS = (FORWARD_CHAIN, STAGE1, STAGE2)


def _comment(text: str) -> list[str]:
    return ["-m", "comment", "--comment", text]


def policy_comment(policy: str) -> str:
    return f"CNI firewall plugin rules (ingressPolicy: {policy})"


OWN_ISOLATION_COMMENTS = frozenset([SHARED_ISOLATION_COMMENT, *(policy_comment(p) for p in ISOLATING_POLICIES)])


def forward_jump() -> Rule:
    """FORWARD's jump to CNI-FORWARD."""
    return parse_args(FORWARD, [*_comment(FORWARD_COMMENT), "-j", FORWARD_CHAIN])


def admin_jump(admin: str) -> Rule:
    """CNI-FORWARD's jump to the administrator's chain, first thing in CNI-FORWARD."""
    return parse_args(FORWARD_CHAIN, [*_comment(ADMIN_COMMENT), "-j", admin])


def container_rules(address: str) -> list[Rule]:
    """Accept the container's own traffic and the replies to it."""
    host = host_cidr(address)
    return [parse_args(FORWARD_CHAIN, ["-d", host, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                                       "-j", "ACCEPT"]),
            parse_args(FORWARD_CHAIN, ["-s", host, "-j", "ACCEPT"])]


def stage1_jump() -> Rule:
    """FORWARD's jump to stage 1; it must come before the jump to CNI-FORWARD, which accepts."""
    return parse_args(FORWARD, [*_comment(SHARED_ISOLATION_COMMENT), "-j", STAGE1])


def stage1_rules(bridge: str, policy: str) -> list[Rule]:
    """The bridge's stage-1 rules for ``policy``, in the order they stand at the top of stage 1."""
    note = _comment(policy_comment(policy))
    leaving = parse_args(STAGE1, ["-i", bridge, "!", "-o", bridge, *note, "-j", STAGE2])
    if policy == ISOLATED:
        return [parse_args(STAGE1, ["-i", bridge, "-o", bridge, *note, "-j", "DROP"]), leaving]
    return [leaving]


def stage2_drop(bridge: str) -> Rule:
    """Drop what enters ``bridge`` from another isolated bridge; shared by both isolating policies."""
    return parse_args(STAGE2, ["-o", bridge, *_comment(SHARED_ISOLATION_COMMENT), "-j", "DROP"])


def stage_returns() -> list[Rule]:
    """The RETURN rules that end stage 1 and stage 2."""
    return [parse_args(chain, [*_comment(SHARED_ISOLATION_COMMENT), "-j", "RETURN"]) for chain in (STAGE1, STAGE2)]


def isolation_rules(bridge: str, policy: str) -> list[Rule]:
    """Every rule one (bridge, policy) pair needs, jump from FORWARD included."""
    return [stage1_jump(), *stage1_rules(bridge, policy), stage2_drop(bridge), *stage_returns()]


def is_admin_jump(rule: Rule) -> bool:
    """Whether ``rule`` is a jump from CNI-FORWARD to an admin chain, as this plugin writes them."""
    return rule.target.is_chain_jump and rule.chain == FORWARD_CHAIN and rule == admin_jump(rule.target.name)


def is_own_isolation_rule(rule: Rule) -> bool:
    """Whether ``rule`` (in a stage chain) carries one of the comments this plugin writes there."""
    return any(match.name == "comment" and match.option("comment") in OWN_ISOLATION_COMMENTS
               for match in rule.matches)


def is_stage_return(rule: Rule) -> bool:
    return rule in stage_returns()


def args_text(rule: Rule) -> str:
    """``[-s 10.55.0.2/32 -j ACCEPT]``: a rule as the reference's messages show it."""
    return "[" + " ".join(to_args(rule)) + "]"
