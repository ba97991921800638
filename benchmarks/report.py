"""Turns run records into the report: median and spread per figure, markdown tables with the ratio
NanoSocket / peer for each pair of servers measured in the run, a JSON file with everything, and a PNG
chart (when matplotlib is there)."""

from __future__ import annotations

import importlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .scenarios import CALIBRATION_SERVER, LOADGEN_CPU, SCENARIOS, TARGET_SERVER, Metric, Scenario, Target

__all__ = ["Stat", "render_markdown", "summarize", "write_chart", "write_json"]

DASH = "\u2013"  # the en dash of a range: 1.2k-1.4k
TIMES = "\u00d7"  # the multiplication sign of a ratio: 0.62x


@dataclass(frozen=True, slots=True)
class Stat:
    """A figure over repeated runs: the median and the spread (min-max)."""

    median: float
    low: float
    high: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.runs}


Summary = dict[str, dict[str, dict[str, Stat]]]  # scenario -> server -> metric -> Stat


def summarize(records: list[dict[str, Any]]) -> Summary:
    """Median and spread of every metric, over the runs that produced it."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for record in records:
        per_metric = values.setdefault(record["scenario"], {}).setdefault(record["server"], {})
        for key, value in record["metrics"].items():
            per_metric.setdefault(key, []).append(float(value))
    return {
        scenario: {
            server: {
                key: Stat(statistics.median(vals), min(vals), max(vals), len(vals))
                for key, vals in metrics.items()
            }
            for server, metrics in servers.items()
        }
        for scenario, servers in values.items()
    }


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def fmt(value: float, unit: str) -> str:
    """A figure in a readable unit."""
    if unit == "µs":
        if value >= 1e6:
            return f"{value / 1e6:.2f} s"
        if value >= 1e3:
            return f"{value / 1e3:.2f} ms"
        return f"{value:.0f} µs"
    if unit == "µs/msg":
        return f"{value:.2f} µs"
    if unit == "/s":
        return _si(value)
    if unit == "%":
        return f"{value:.0f}%"
    if unit in ("MB", "MB/s"):
        return f"{value:.1f} {unit}"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ratio":
        return f"{value:.4f}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"


def _cell(stat: Stat | None, metric: Metric) -> str:
    if stat is None:
        return "—"
    text = fmt(stat.median, metric.unit)
    if stat.runs > 1 and stat.low != stat.high:
        text += f" ({fmt(stat.low, metric.unit)}{DASH}{fmt(stat.high, metric.unit)})"
    return text


def _ratio(ours: Stat | None, peer: Stat | None, metric: Metric) -> str:
    if ours is None or peer is None or metric.better is None or peer.median == 0:
        return ""
    ratio = ours.median / peer.median
    good = ratio >= 1 if metric.better == "higher" else ratio <= 1
    return f"{ratio:.2f}{TIMES}" + (" ✓" if good else "")


def _arrow(metric: Metric) -> str:
    return {"higher": " ↑", "lower": " ↓"}.get(metric.better or "", "")


Pair = tuple[str, str]  # (NanoSocket server, its peer)


def _ran(stats: dict[str, dict[str, Stat]], servers: list[str]) -> list[str]:
    return [server for server in servers if stats.get(server)]


def _scenario_table(
    scenario: Scenario, stats: dict[str, dict[str, Stat]], servers: list[str], pairs: list[Pair]
) -> str:
    ran = _ran(stats, servers)
    compared = [(ours, peer) for ours, peer in pairs if ours in ran and peer in ran]
    head = ["metric", *ran, *(f"{ours} / {peer}" for ours, peer in compared)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in scenario.metrics:
        row_stats = [stats.get(server, {}).get(metric.key) for server in ran]
        if all(s is None for s in row_stats):
            continue
        cells = [metric.label + _arrow(metric), *(_cell(s, metric) for s in row_stats)]
        cells += [
            _ratio(stats.get(ours, {}).get(metric.key), stats.get(peer, {}).get(metric.key), metric)
            for ours, peer in compared
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _target_verdict(target: Target, stat: Stat | None, unit: str) -> str:
    if stat is None:
        return f"{target.text}: not measured"
    share = stat.median / target.value if target.value else 0.0
    if target.reached(stat.median):
        return f"{target.text}: **reached** ({fmt(stat.median, unit)})"
    how = f"{share * 100:.1f}% of it" if target.op == ">=" else f"{share:.1f}{TIMES} the bound"
    return f"{target.text}: not reached ({fmt(stat.median, unit)}, {how})"


def _metric(scenario: Scenario, key: str) -> Metric:
    return next(m for m in scenario.metrics if m.key == key)


def _targets_table(summary: Summary, scenarios: list[str]) -> str:
    head = ["scenario", "target", f"{TARGET_SERVER} (median, spread)", "reached"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in scenarios:
        scenario = SCENARIOS[name]
        target = scenario.target
        if target is None:
            continue
        metric = _metric(scenario, target.key)
        stat = summary.get(name, {}).get(TARGET_SERVER, {}).get(target.key)
        if stat is None:
            verdict = "not measured"
        elif target.reached(stat.median):
            verdict = "✅ reached"
        else:
            share = stat.median / target.value
            verdict = (
                f"❌ not reached ({share * 100:.1f}% of the target)"
                if target.op == ">="
                else f"❌ not reached ({share:.1f}{TIMES} the bound)"
            )
        lines.append(f"| {scenario.title} | {target.text} | {_cell(stat, metric)} | {verdict} |")
    return "\n".join(lines)


def _summary_tables(
    summary: Summary, scenarios: list[str], servers: list[str], pairs: list[Pair], families: dict[str, str]
) -> list[str]:
    """One table per family of servers: a row per scenario with its headline figure for every server
    of the family (a peer's cell also has the ratio NanoSocket / peer), the target, the load
    generator's highest CPU."""
    ours_of = {peer: ours for ours, peer in pairs}
    out: list[str] = []
    for family in dict.fromkeys(families[s] for s in servers):
        columns = [s for s in servers if families[s] == family]
        rows = [n for n in scenarios if any(summary.get(n, {}).get(s) for s in columns)]
        if not rows:
            continue
        title = "Event servers" if family == "events" else "Raw WebSocket echo servers"
        out += [f"### {title}", ""]
        if family == "events":
            out += [
                "Median of the runs; a peer's cell has the ratio NanoSocket / peer in brackets (✓ where "
                f"NanoSocket is ahead). Targets are for `{TARGET_SERVER}`.",
                "",
            ]
        head = ["scenario", "figure", *columns, "target", "max loadgen CPU"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in rows:
            scenario = SCENARIOS[name]
            stats = summary.get(name, {})
            keys = [scenario.headline]
            if scenario.kind != "idle" and any(m.key == "server_us_per_msg" for m in scenario.metrics):
                keys.append("server_us_per_msg")  # robust to other load on the server's core
            for index, key in enumerate(keys):
                metric = _metric(scenario, key)
                cells = [scenario.title if index == 0 else "", metric.label + _arrow(metric)]
                for server in columns:
                    stat = stats.get(server, {}).get(metric.key)
                    if stat is None:
                        cells.append("—")
                        continue
                    cell = fmt(stat.median, metric.unit)
                    ours = ours_of.get(server)
                    if ours is not None:
                        ratio = _ratio(stats.get(ours, {}).get(metric.key), stat, metric)
                        if ratio:
                            cell += f" ({ratio})"
                    cells.append(cell)
                target = scenario.target
                if index == 0 and target is not None and TARGET_SERVER in columns:
                    tstat = stats.get(TARGET_SERVER, {}).get(target.key)
                    cells.append(_target_verdict(target, tstat, _metric(scenario, target.key).unit))
                else:
                    cells.append("")
                loadgen = [
                    stats[s][LOADGEN_CPU.key].high for s in columns if LOADGEN_CPU.key in stats.get(s, {})
                ]
                if index == 0:
                    cells.append(f"{max(loadgen):.0f}%" if loadgen else "—")
                else:
                    cells.append("")
                lines.append("| " + " | ".join(cells) + " |")
        out += ["\n".join(lines), ""]
    return out


def render_markdown(
    summary: Summary,
    records: list[dict[str, Any]],
    *,
    scenarios: list[str],
    servers: list[str],
    server_titles: dict[str, str],
    pairs: list[Pair],
    families: dict[str, str],
    machine: dict[str, Any],
    settings: dict[str, Any],
    command: str,
) -> str:
    out: list[str] = ["# NanoSocket benchmark results", ""]
    out.append(
        f"Measured {settings['finished']} with `{command}`: {settings['repeats']} run(s) per figure, each "
        f"on a freshly started server; cells show the median and, in brackets, the spread (min{DASH}max). "
        f"Echo runs last {settings['duration']:g} s after {settings['warmup']:g} s of warm-up."
    )
    out.append("")
    pin = (
        "The server ran pinned to core 0 (`taskset -c 0`) and the load generator to core 1."
        if settings["pinned"]
        else "Server and load generator were NOT pinned to separate cores (under 2 cores, or no taskset)."
    )
    out.append(
        pin + " ↑ / ↓: higher / lower is better. Ratios are NanoSocket / peer for each peer measured in "
        "this run (NanoSocket's raw echo-server against a raw picows echo server; the NanoSocket event "
        "server, the full framework, against every event peer); ✓ marks where NanoSocket is ahead. "
        "CPU columns are in % of one core: the server's from /proc, the load generator's from its own "
        '`getrusage`; "other load on server core" is what other processes used of the server\'s core.'
    )
    source = settings.get("source") or {}
    if source.get("commit"):
        dirty = " plus uncommitted changes in src/" if source.get("src_dirty") else ""
        out += ["", f"Source measured: commit `{source['commit']}`{dirty}."]
    targets = _targets_table(summary, scenarios)
    if targets.count("\n") > 1:
        out += ["", "## Targets", "", targets]
    out += ["", "## Summary", ""]
    out += _summary_tables(summary, scenarios, servers, pairs, families)
    for name in scenarios:
        scenario = SCENARIOS[name]
        out += [f"## {scenario.title}", "", f"{scenario.description}.", ""]
        out += [_scenario_table(scenario, summary.get(name, {}), servers, pairs), ""]
        if scenario.target is not None and summary.get(name, {}).get(TARGET_SERVER):
            tmetric = _metric(scenario, scenario.target.key)
            stat = summary[name][TARGET_SERVER].get(scenario.target.key)
            verdict = _target_verdict(scenario.target, stat, tmetric.unit)
            out += [f"Target for {TARGET_SERVER}: {verdict}.", ""]
    out += ["## Servers", ""]
    out += [f"- **{name}**: {server_titles[name]}" for name in servers]
    out += ["", "## Machine", ""]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    peers = ", ".join(f"{k} {v}" for k, v in machine.get("peer_versions", {}).items() if v)
    out += [
        f"- CPU: {machine['cpu_model']}, {machine['cores']} core(s) ({machine['usable_cores']} usable)",
        f"- Kernel: {machine['kernel']}; Python {machine['python']}; "
        f"{machine['compiler'] or 'no C compiler'}",
        f"- Packages (project venv): {packages}",
        *_speedups_line(machine.get("nanosocket_speedups")),
        *([f"- Peers (benchmarks/.peers/): {peers}"] if peers else []),
        f"- Open files limit: {machine['open_files_limit']}",
        f"- Load average (1/5/15 min) before: {_loads(machine['load_average'])}, "
        f"after: {_loads(settings['load_average_after'])}",
        "",
    ]
    out += ["## Notes", ""]
    out += _notes(summary, records, scenarios, servers)
    out.append("")
    return "\n".join(out)


def _speedups_line(speedups: dict[str, Any] | None) -> list[str]:
    if speedups is None:
        return []
    compiled = ", ".join(speedups.get("compiled", [])) or "none built"
    state = "in use" if speedups.get("enabled") and speedups.get("compiled") else "not in use"
    return [f"- NanoSocket's compiled kernels (`_speedups`): {compiled} ({state})"]


def _loads(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _notes(
    summary: Summary, records: list[dict[str, Any]], scenarios: list[str], servers: list[str]
) -> list[str]:
    notes: list[str] = []
    loadgen = [
        (stats[LOADGEN_CPU.key].high, name, server)
        for name in scenarios
        for server, stats in summary.get(name, {}).items()
        if LOADGEN_CPU.key in stats and server != CALIBRATION_SERVER
    ]
    ceiling = [
        f"{SCENARIOS[name].title} {fmt(stats[SCENARIOS[name].headline].median, _unit(name))} at "
        f"{stats[LOADGEN_CPU.key].median:.0f}% loadgen CPU"
        for name in scenarios
        if (stats := summary.get(name, {}).get(CALIBRATION_SERVER)) and LOADGEN_CPU.key in stats
    ]
    if ceiling:
        notes.append(
            f"- Calibration ({CALIBRATION_SERVER}, a minimal C server that does next to nothing): "
            + "; ".join(ceiling)
            + ". These are what the load generator sustains on its core; a figure of a server under test "
            "well below them, with loadgen CPU well below 100%, was set by that server."
        )
    if loadgen:
        top, name, server = max(loadgen)
        verdict = (
            "so the server, not the load generator, set the pace"
            if top < 90
            else "close to a full core: that figure may be limited by the load generator"
        )
        notes.append(
            f"- The load generator's own CPU (its `getrusage`, over the measured seconds) peaked at "
            f"{top:.0f}% of its core ({name}, {server}), {verdict}."
        )
    others = [
        stats["others_cpu_pct"].high
        for name in scenarios
        for stats in summary.get(name, {}).values()
        if "others_cpu_pct" in stats
    ]
    if others and max(others) >= 5:
        notes.append(
            f"- Other processes used up to {max(others):.0f}% of the server's core during some measurements "
            "(core busy time minus the server's own CPU): figures from this run are noisy."
        )
    ratios = [
        (stats["delivery_ratio"].low, name, server)
        for name in scenarios
        for server, stats in summary.get(name, {}).items()
        if "delivery_ratio" in stats
    ]
    if ratios:
        low, name, server = min(ratios)
        notes.append(
            "- Fan-out delivered every broadcast to every subscriber in every run (delivery ratio 1.0)."
            if low >= 1.0
            else f"- Fan-out lost broadcasts: delivery ratio down to {low:.4f} ({name}, {server})."
        )
    failed = [r for r in records if not r["ok"]]
    for record in failed:
        notes.append(
            f"- Run {record['scenario']} / {record['server']} #{record['repeat']}: {record['error']}"
        )
    if not failed:
        notes.append(
            "- Every run completed without a load generator error (no failed connection, no lost reply)."
        )
    notes.append(
        "- Echo latency is per connection, FIFO from send to reply, in a closed loop: with 32 requests in "
        "flight it is mostly queueing (about in-flight / rate); the ping-pong rows are the unloaded latency."
    )
    return notes


def _unit(scenario: str) -> str:
    return _metric(SCENARIOS[scenario], SCENARIOS[scenario].headline).unit


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def write_chart(
    path: Path, summary: Summary, scenarios: list[str], servers: list[str], pairs: list[Pair]
) -> bool:
    """One panel per scenario with its headline figure per server (median, min-max whiskers);
    NanoSocket's servers in blue, their peers in orange.

    Returns False when matplotlib is not installed.
    """
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    shown = [name for name in scenarios if summary.get(name)]
    if not shown:
        return False
    columns = min(3, len(shown))
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    ours = {o for o, _ in pairs}
    peers = {p for _, p in pairs}

    def color(server: str) -> str:
        return "#2b7bba" if server in ours else "#e08a2c" if server in peers else "#888888"

    for index, name in enumerate(shown):
        ax = axes[index // columns][index % columns]
        scenario = SCENARIOS[name]
        metric = next(m for m in scenario.metrics if m.key == scenario.headline)
        labels, medians, tops, low_err, high_err = [], [], [], [], []
        for server in servers:
            stat = summary[name].get(server, {}).get(metric.key)
            if stat is None:
                continue
            labels.append(server)
            medians.append(stat.median)
            tops.append(stat.high)
            low_err.append(stat.median - stat.low)
            high_err.append(stat.high - stat.median)
        ax.bar(labels, medians, yerr=[low_err, high_err], capsize=4, color=[color(s) for s in labels])
        for x, (value, top) in enumerate(zip(medians, tops, strict=True)):
            ax.annotate(fmt(value, metric.unit), (x, top), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 4), textcoords="offset points")  # fmt: skip
        target = scenario.target
        if target is not None and target.key == metric.key and TARGET_SERVER in labels:
            ax.axhline(target.value, color="#c0392b", linestyle="--", linewidth=1)
            ax.annotate(f"target {fmt(target.value, metric.unit)}", (len(labels) - 0.5, target.value),
                        ha="right", va="bottom", fontsize=7, color="#c0392b")  # fmt: skip
            if medians and target.value > 4 * max(tops):
                ax.set_yscale("log")
        direction = {"higher": "higher is better", "lower": "lower is better"}.get(metric.better or "", "")
        ax.set_title(f"{scenario.title}\n{metric.label} ({direction})", fontsize=9)
        ax.set_ylabel("per second" if metric.unit == "/s" else metric.unit, fontsize=8)
        ax.tick_params(labelsize=8)
        if len(labels) > 2:
            ax.tick_params(axis="x", labelsize=6.5, labelrotation=30)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
        ax.margins(y=0.15)
    for index in range(len(shown), rows * columns):
        axes[index // columns][index % columns].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True
