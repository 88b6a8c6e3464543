"""CNI_ARGS: ``K=V;K=V`` pairs, validated against the keys a plugin knows."""
from __future__ import annotations

from cni.errors import INVALID_ENV, CNIError


def parse(raw: str) -> dict[str, str]:
    """Split CNI_ARGS into a dict. Each non-empty pair must be exactly ``K=V``."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key or "=" in value:
            raise CNIError(INVALID_ENV, f'ARGS: invalid pair "{pair}"')
        out[key] = value
    return out


def ignore_unknown(args: dict[str, str]) -> bool:
    return args.get("IgnoreUnknown", "").lower() in ("1", "true")


def check_known(args: dict[str, str], known: set[str] | frozenset[str]) -> None:
    """Fail like the reference on keys the plugin does not know, unless ``IgnoreUnknown`` is set.

    Keys are case-sensitive, as in the Go reference (``IP``, ``MAC``, ``K8S_POD_NAME``).
    """
    if ignore_unknown(args):
        return
    unknown = [f"{k}={v}" for k, v in args.items() if k not in known and k != "IgnoreUnknown"]
    if unknown:
        listed = " ".join(f'"{u}"' for u in unknown)
        raise CNIError(INVALID_ENV, f"ARGS: unknown args [{listed}]")


# Keys that every runtime may send and that no plugin needs to act on.
KUBERNETES_KEYS = frozenset({"K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"})
