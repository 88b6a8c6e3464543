"""Turning the benchmark's measurements into medians, ratios and growth against the targets, text and Markdown."""
from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench import Measurements

OPS = ("ADD", "CHECK", "DEL", "DEL-again")
# Each of our sides against its anchor in the same run, when both are in it: (ours, reference).
RATIO_PAIRS = (
    ("ours-iptables", "ref-1.1.1"),
    ("ours-nftables", "ref-1.7.1-nft"),
    ("ours-nftables", "ref-1.1.1"),
    ("ours-iptables", "ref-1.7.1-iptables"),
)
# Issue 4: the median of the per-cycle ratios ours/reference, by preloaded containers on the node. It
# was written against Debian's 1.1.1, so it applies to each of our sides measured against that one.
RATIO_TARGETS: dict[str, dict[int, float]] = {
    "ADD": {0: 1.5, 100: 1.0, 1000: 0.25},
    "CHECK": {0: 1.5, 100: 1.0, 1000: 0.25},
    "DEL": {0: 0.5, 100: 0.5, 1000: 0.3},
}
DEL_AGAIN_TARGET = 0.3  # at every size
RATIO_TARGET_ANCHORS = ("ref-1.1.1",)
RSS_LIMIT_MIB = 40.0
VERSION_LIMIT_MS = 25.0
GROWTH_SIZE = 5000  # the growth targets are for this many containers against an empty node


@dataclass(frozen=True)
class GrowthTarget:
    limit: float
    strict: bool  # "<" rather than "<="
    source: str

    def met(self, growth: float) -> bool:
        return growth < self.limit if self.strict else growth <= self.limit

    def __str__(self) -> str:
        return f"{'<' if self.strict else '≤'} {self.limit:g}"


# A side's operation at GROWTH_SIZE containers over the same operation on an empty node.
GROWTH_TARGETS: dict[str, dict[str, GrowthTarget]] = {
    "ours-iptables": {"ADD": GrowthTarget(3.0, True, "issue 4")},
    "ours-nftables": {op: GrowthTarget(1.5, False, "issue 9") for op in ("ADD", "CHECK", "DEL")},
}
KNOWN_REFERENCE_BUG = ("the Debian 1.1.1 portmap CHECK looks for IPv6 rules it never wrote, so it fails for "
                       "every IPv4-only container (reference.md §2.8); its time is still counted")


def ratio_target(op: str, size: int, anchor: str) -> float | None:
    if anchor not in RATIO_TARGET_ANCHORS:
        return None
    if op == "DEL-again":
        return DEL_AGAIN_TARGET
    return RATIO_TARGETS[op].get(size)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def is_ours(side: str) -> bool:
    return side.startswith("ours")


def summarize(size: int, cycles: int, chain: list[str], helper: bool, sides: dict[str, Measurements],
              preload_s: dict[str, float], rss_floor_kib: int) -> dict[str, Any]:
    operations = {op: {name: median([o.ms for o in m.operations[op]]) for name, m in sides.items()} for op in OPS}
    return {
        "containers": size, "cycles": cycles, "chain": chain, "helper": helper, "sides": list(sides),
        "preload_s": {k: round(v, 1) for k, v in preload_s.items()},
        "rss_floor_mib": round(rss_floor_kib / 1024, 1),
        "rss_exact": all(m.exact_rss_kib for m in sides.values()),
        "operations": operations,
        "ratios": [pair_ratios(ours, ref, sides[ours], sides[ref], size) for ours, ref in RATIO_PAIRS
                   if ours in sides and ref in sides],
        "plugins": {name: plugin_medians(m) for name, m in sides.items()},
        "rss_mib": {name: peak_rss_mib(m) for name, m in sides.items()},
        "version_ms": {name: {k: round(v, 2) for k, v in m.version_ms.items()} for name, m in sides.items()},
        "failures": {name: {op: {"count": len(msgs), "example": msgs[0]} for op, msgs in m.failures().items()}
                     for name, m in sides.items()},
    }


def pair_ratios(ours: str, ref: str, a: Measurements, b: Measurements, size: int) -> dict[str, Any]:
    """Per operation the median over the cycles of ours/ref within each cycle (both ran in it, back to back)."""
    ops: dict[str, Any] = {}
    for op in OPS:
        ratio = median([x.ms / y.ms for x, y in zip(a.operations[op], b.operations[op]) if y.ms > 0])
        target = ratio_target(op, size, ref)
        ops[op] = {"ratio": ratio, "target": target,
                   "met": None if target is None or ratio is None else ratio <= target}
    return {"ours": ours, "reference": ref, "ops": ops}


def plugin_medians(m: Measurements) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for op, operations in m.operations.items():
        for operation in operations:
            for run in operation.runs:
                samples.setdefault(f"{run.plugin} {op}", []).append(run.ms)
    return {key: round(statistics.median(values), 2) for key, values in samples.items()}


def peak_rss_mib(m: Measurements) -> dict[str, float]:
    """Per plugin, the exact peaks from the RSS pass when there was one, else the max wait4 saw in the
    timed execs (never below the exec server's floor)."""
    if m.exact_rss_kib:
        return {plugin: round(kib / 1024, 1) for plugin, kib in sorted(m.exact_rss_kib.items())}
    peaks: dict[str, int] = dict(m.version_rss_kib)
    for operations in m.operations.values():
        for operation in operations:
            for run in operation.runs:
                peaks[run.plugin] = max(peaks.get(run.plugin, 0), run.rss_kib)
    return {plugin: round(kib / 1024, 1) for plugin, kib in sorted(peaks.items())}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version()}


def document(command: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"command": command, "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "runs": summaries, "growth": growth(summaries), "checks": checks(summaries)}


def growth(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each side and each non-zero size of the run: every operation's median time there over its
    median on an empty node (needs size 0 in the same run). Targets are for our sides; the
    references' growth is there to compare with."""
    empty = next((s for s in summaries if s["containers"] == 0), None)
    if empty is None:
        return []
    rows = []
    for s in summaries:
        if s["containers"] == 0:
            continue
        for side in s["sides"]:
            if side not in empty["sides"]:
                continue
            ops: dict[str, Any] = {}
            for op in OPS:
                base, there = empty["operations"][op][side], s["operations"][op][side]
                factor = there / base if base and there is not None else None
                target = GROWTH_TARGETS.get(side, {}).get(op) if s["containers"] == GROWTH_SIZE else None
                ops[op] = {"growth": factor, "target": str(target) if target else None,
                           "source": target.source if target else None,
                           "met": None if target is None or factor is None else target.met(factor)}
            rows.append({"side": side, "containers": s["containers"], "ops": ops})
    return rows


def checks(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The absolute targets: peak RSS per side of ours, VERSION."""
    found = []
    ours_sides = list(dict.fromkeys(side for s in summaries for side in s["sides"] if is_ours(side)))
    for side in ours_sides:
        rss = [(v, f"{side} {plugin} at {s['containers']}") for s in summaries
               for plugin, v in s["rss_mib"].get(side, {}).items()]
        # Through the helper the executables only forward the call; the work happens in its workers,
        # which count as plugin processes too.
        rss += [(v, f"helper worker running {plugin} at {s['containers']}") for s in summaries
                for plugin, v in (s.get("worker_rss_mib") or {}).get(side, {}).items()]
        if not rss:
            continue
        worst, where = max(rss)
        value = f"{worst} MiB ({where})"
        helpers = [s["helper_rss_mib"][side] for s in summaries if (s.get("helper_rss_mib") or {}).get(side)]
        if helpers:
            value += f"; the idle helper itself peaked at {max(helpers)} MiB"
        found.append({"what": f"peak RSS of any {side} plugin process <= {RSS_LIMIT_MIB:.0f} MiB",
                      "value": value, "met": worst <= RSS_LIMIT_MIB})
    versions = [(v, f"{plugin}, {side}") for s in summaries for side in ours_sides
                for plugin, v in s["version_ms"].get(side, {}).items()]
    if versions:
        worst_ms, plugin = max(versions)
        found.append({"what": f"VERSION of any of our plugins <= {VERSION_LIMIT_MS:.0f} ms",
                      "value": f"{worst_ms:.1f} ms ({plugin})", "met": worst_ms <= VERSION_LIMIT_MS})
    return found


# --- text ----------------------------------------------------------------------------------------

def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "MISSED")


def _judged(value: float | None, target: Any, met: bool | None, unit: str = "") -> str:
    """``0.72`` or ``0.72 (≤ 1.5 met)``."""
    if value is None:
        return "-"
    text = f"{value:.2f}{unit}"
    if target is None:
        return text
    bound = target if isinstance(target, str) else f"≤ {target}"  # growth targets come as "< 3", "≤ 1.5"
    return f"{text} ({bound} {_verdict(met)})"


def pair_label(pair: dict[str, Any]) -> str:
    return f"{pair['ours']} / {pair['reference']}"


def mode_title(summary: dict[str, Any]) -> str:
    title = (f"chain {'+'.join(summary['chain'])}, our plugins "
             + ("through the resident helper" if summary["helper"] else "exec'd directly (no helper)"))
    return title + (", the machine's shared locks" if summary.get("xtables_lock") == "shared" else "")


def _columns(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def render_text(s: dict[str, Any]) -> str:
    sides = s["sides"]
    lines = [f"\n== {s['containers']} containers preloaded, {s['cycles']} cycles; {mode_title(s)}",
             "preloading took " + ", ".join(f"{k} {v:.0f} s" for k, v in s["preload_s"].items()), ""]
    widths = [10] + [max(len(n), 8) for n in sides]
    lines.append(_columns(["ms", *sides], widths) + "   (medians)")
    for op in OPS:
        lines.append(_columns([op, *(_ms(s["operations"][op][n]) for n in sides)], widths))
    if s["ratios"]:
        labels = [pair_label(p) for p in s["ratios"]]
        widths = [10] + [max(len(label), 22) for label in labels]
        lines += ["", _columns(["ratio", *labels], widths) + "   (medians of the per-cycle ratios)"]
        for op in OPS:
            lines.append(_columns([op, *(_judged(p["ops"][op]["ratio"], p["ops"][op]["target"], p["ops"][op]["met"])
                                         for p in s["ratios"])], widths))
    lines.append("\nper plugin (ms, medians):")
    for side, medians in s["plugins"].items():
        lines.append(f"  {side:<18} " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    how = ("under GNU time in one extra untimed cycle" if s["rss_exact"] else
           f"max over the timed execs; wait4 cannot see below the exec server's own {s['rss_floor_mib']} MiB")
    lines.append(f"\npeak RSS per plugin process (MiB, {how}):")
    for side, peaks in s["rss_mib"].items():
        lines.append(f"  {side:<18} " + ", ".join(f"{k} {v}" for k, v in peaks.items()))
    for side, mib in (s.get("helper_rss_mib") or {}).items():
        lines.append(f"  ({side} only forwards the call; its resident helper itself peaked at {mib} MiB)")
    for side, peaks in (s.get("worker_rss_mib") or {}).items():
        lines.append(f"  {side} helper workers (peak per call, timed cycles): "
                     + ", ".join(f"{k} {v}" for k, v in peaks.items()))
    lines.append("\nVERSION wall time (ms, median of 20):")
    for side, versions in s["version_ms"].items():
        lines.append(f"  {side:<18} " + ", ".join(f"{k} {v:.1f}" for k, v in versions.items()))
    for side, about in (s.get("references") or {}).items():
        lines.append(f"  {side} is: {about}")
    for side, failures in s["failures"].items():
        for op, info in failures.items():
            lines.append(f"\nfailed {info['count']}/{s['cycles']} times: {failure_note(side, op, info['example'])}")
    return "\n".join(lines)


def render_growth_text(doc: dict[str, Any]) -> str:
    if not doc["growth"]:
        return ""
    lines = ["\n== growth over an empty node (median at the size / median at 0 containers)"]
    for row in doc["growth"]:
        lines.append(f"  {row['side']} at {row['containers']}: " + ", ".join(
            f"{op} {_judged(v['growth'], v['target'], v['met'], 'x')}" for op, v in row["ops"].items()))
    return "\n".join(lines)


# --- the README table ----------------------------------------------------------------------------

def render_markdown(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    m = doc["machine"]
    sides = list(dict.fromkeys(side for s in runs for side in s["sides"]))
    lines = [f"### {mode_title(runs[0])}: {', '.join(sides)}", "",
             (f"`sudo {doc['command']}` on {m['nproc']} CPUs ({m['cpu'] or 'unknown CPU'}), "
              f"kernel {m['kernel']}, Python {m['python']}, {doc['date']}; {runs[0]['cycles']} cycles per size."),
             ""]
    references = {side: about for s in runs for side, about in (s.get("references") or {}).items()}
    if references:
        lines += ["References: " + "; ".join(f"{side} is `{about}`" for side, about in references.items()) + ".", ""]
    lines += ["Medians (ms) of each operation over the chain:", "",
              "| containers | operation | " + " | ".join(f"{side} ms" for side in sides) + " |",
              "|---:|---|" + "---:|" * len(sides)]
    for s in runs:
        for op in OPS:
            lines.append(f"| {s['containers']} | {op} | "
                         + " | ".join(_ms(s["operations"][op].get(side)) for side in sides) + " |")
    labels = list(dict.fromkeys(pair_label(p) for s in runs for p in s["ratios"]))
    if labels:
        lines += ["", "Medians of the per-cycle ratios (target: issue 4, against Debian's 1.1.1):", "",
                  "| containers | operation | " + " | ".join(labels) + " |", "|---:|---|" + "---:|" * len(labels)]
        for s in runs:
            by_label = {pair_label(p): p for p in s["ratios"]}
            for op in OPS:
                cells = [_judged(by_label[label]["ops"][op]["ratio"], by_label[label]["ops"][op]["target"],
                                 by_label[label]["ops"][op]["met"]) if label in by_label else "-" for label in labels]
                lines.append(f"| {s['containers']} | {op} | " + " | ".join(cells) + " |")
    if doc["growth"]:
        grown = list(dict.fromkeys(row["side"] for row in doc["growth"]))
        sizes = list(dict.fromkeys(row["containers"] for row in doc["growth"]))
        lines += ["", f"Growth over an empty node (median at the size / median at 0; targets at {GROWTH_SIZE:,}: "
                      "issue 9 for nftables, issue 4 for iptables):", "",
                  "| containers | operation | " + " | ".join(f"{side} ×" for side in grown) + " |",
                  "|---:|---|" + "---:|" * len(grown)]
        for size in sizes:
            rows = {row["side"]: row for row in doc["growth"] if row["containers"] == size}
            for op in OPS:
                cells = [_judged(rows[side]["ops"][op]["growth"], rows[side]["ops"][op]["target"],
                                 rows[side]["ops"][op]["met"]) if side in rows else "-" for side in grown]
                lines.append(f"| {size} | {op} | " + " | ".join(cells) + " |")
    lines += ["", "| other targets | measured | |", "|---|---|---|"]
    lines += [f"| {c['what']} | {c['value']} | {_verdict(c['met'])} |" for c in doc["checks"]]
    last = runs[-1]
    lines += ["", f"At {last['containers']} containers:", ""]
    for side in last["sides"]:
        lines.append(f"- {side}: per plugin (ms) " + ", ".join(f"{k} {v:.1f}" for k, v in last["plugins"][side].items())
                     + "; peak RSS (MiB) " + ", ".join(f"{k} {v}" for k, v in last["rss_mib"][side].items())
                     + (("; in the helper's workers " + ", ".join(
                         f"{k} {v}" for k, v in last["worker_rss_mib"][side].items()))
                        if (last.get("worker_rss_mib") or {}).get(side) else "")
                     + "; VERSION (ms) " + ", ".join(f"{k} {v:.1f}" for k, v in last["version_ms"][side].items())
                     + ".")
    notes = sorted({failure_note(side, op, info["example"]) for s in runs
                    for side, failures in s["failures"].items() for op, info in failures.items()})
    if notes:
        lines += ["", "Failures seen (timed all the same):"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def failure_note(side: str, op: str, example: str) -> str:
    text = " ".join(example.split())[:200]
    known = f" ({KNOWN_REFERENCE_BUG})" if side == "ref-1.1.1" and op == "CHECK" and "ipv6" in example else ""
    return f"{side} {op}: `{text}`{known}"


def readme_mode(doc: dict[str, Any]) -> str:
    """The README block a run goes to: by helper or not, the xtables lock, and the set of sides."""
    first = doc["runs"][0]
    mode = ("helper" if first["helper"] else "direct") + ("-shared-lock" if first.get("xtables_lock") == "shared" else "")
    sides = sorted({side for s in doc["runs"] for side in s["sides"]})
    return f"{mode}:{','.join(sides)}"


def write_readme(path: str, doc: dict[str, Any]) -> None:
    """Replace (or append) the block for this mode and set of sides in the README, keeping the rest."""
    mode = readme_mode(doc)
    begin, end = f"<!-- bench-results:{mode} -->", f"<!-- /bench-results:{mode} -->"
    block = f"{begin}\n{render_markdown(doc)}\n{end}"
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n## Results\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
