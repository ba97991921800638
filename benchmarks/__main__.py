"""NanoSocket's benchmark suite: ``python -m benchmarks`` (what ``make bench`` runs).

    python -m benchmarks                         # every scenario, every server, 3 runs each
    python -m benchmarks --quick                 # a fast smoke run (1 run, short, 1,000 idle conns)
    python -m benchmarks --scenarios echo,idle --servers nanosocket,picows --repeats 3
    python -m benchmarks --scenarios events --servers nanosocket-events,picows-events,node-socketio
    python -m benchmarks --scenarios targets --servers nanosocket-events   # the issue's targets only
    python -m benchmarks --list

Peer servers' dependencies (python-socketio, websockets, Node ws and socket.io) are installed on first
use into benchmarks/.peers/ (gitignored), not into the project venv.

Writes ``benchmarks/results/latest.md``, ``latest.json`` and ``latest.png`` (``quick.*`` for --quick);
the output of every run's server and load generator goes to ``benchmarks/results/raw/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .driver import LoadgenError, ensure_built
from .procstat import machine_facts, source_state
from .progress import ProgressBar
from .report import render_markdown, summarize, write_chart, write_json
from .runner import RunOptions, can_pin, run_once
from .scenarios import ALIASES, SCENARIOS, TARGET_SERVER, Timing
from .servers import SERVERS, pairs

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _target_json(name: str, summary: dict[str, Any]) -> dict[str, Any] | None:
    target = SCENARIOS[name].target
    if target is None:
        return None
    stat = summary.get(name, {}).get(TARGET_SERVER, {}).get(target.key)
    return {
        "server": TARGET_SERVER,
        "metric": target.key,
        "op": target.op,
        "value": target.value,
        "text": target.text,
        "measured_median": None if stat is None else stat.median,
        "reached": None if stat is None else target.reached(stat.median),
    }


def _names(value: str, known: dict[str, Any], aliases: dict[str, tuple[str, ...]], what: str) -> list[str]:
    names: list[str] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        expanded = aliases.get(item, (item,))
        for name in expanded:
            if name not in known:
                raise SystemExit(f"unknown {what} {name!r}; known: {', '.join([*known, *aliases])}")
            if name not in names:
                names.append(name)
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run: 1 repeat, 1 s runs, 1,000 idle conns"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated (aliases: " + ", ".join(ALIASES) + ")",
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated servers to measure")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per echo run (default 5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per echo run (default 1)")
    parser.add_argument("--idle-conns", type=int, help="connections the idle scenario holds (default 10000)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="directory of the report files")
    parser.add_argument("--name", help="report file name without suffix (default latest; quick with --quick)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to cores")
    parser.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"scenario {scenario.name:15} {scenario.title}: {scenario.description}")
        for server in SERVERS.values():
            print(f"server   {server.name:17} {server.title}")
        return 0
    quick = args.quick
    timing = Timing(
        duration=args.duration or (1.0 if quick else 5.0),
        warmup=args.warmup if args.warmup is not None else (0.3 if quick else 1.0),
        idle_conns=args.idle_conns or (1_000 if quick else 10_000),
    )
    repeats = args.repeats or (1 if quick else 3)
    scenarios = _names(args.scenarios, SCENARIOS, ALIASES, "scenario")
    servers = _names(args.servers, SERVERS, {}, "server")
    for name in list(servers):
        print(f"preparing server {name}", file=sys.stderr, flush=True)
        reason = SERVERS[name].check()
        if reason is not None:
            print(f"skipping server {name}: {reason}", file=sys.stderr)
            servers.remove(name)
    if not servers or not scenarios:
        print("nothing to run", file=sys.stderr)
        return 2
    compared = pairs(servers)
    name = args.name or ("quick" if quick else "latest")
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    raw_dir = output / "raw" / name
    pinned = can_pin() and not args.no_pin
    options = RunOptions(timing=timing, pin=pinned, raw_dir=raw_dir)

    try:
        binary = ensure_built()
    except LoadgenError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"load generator: {binary}", file=sys.stderr)
    packages = sorted(
        {"nanosocket", "orjson", "matplotlib", *(p for s in servers for p in SERVERS[s].packages)}
    )
    machine = machine_facts(packages)
    machine["peer_versions"] = {k: v for s in servers for k, v in SERVERS[s].versions().items()}
    source = source_state()

    plan = [
        (SCENARIOS[scenario], SERVERS[server], repeat)
        for repeat in range(1, repeats + 1)
        for scenario in scenarios
        for server in servers
        if SCENARIOS[scenario].runs_on(SERVERS[server])
    ]
    total = sum(s.expected_seconds(timing) for s, _, _ in plan)
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    with ProgressBar(len(plan), total) as bar:
        for scenario, server, repeat in plan:
            bar.start(f"{scenario.name} x {server.name} #{repeat}", scenario.expected_seconds(timing))
            record = run_once(scenario, server, options, repeat)
            records.append(record)
            metrics = record["metrics"]
            note = ", ".join(
                f"{key}={metrics[key]:.4g}"
                for key in (scenario.headline, "loadgen_cpu_pct", "server_cpu_pct")
                if key in metrics
            )
            bar.finish(note)
            if not record["ok"]:
                bar.message(f"  ! {scenario.name} x {server.name} #{repeat}: {record['error']}")

    summary = summarize(records)
    arguments = [shlex.quote(arg) for arg in sys.argv[1:]]
    command = "make bench" if os.environ.get("MAKELEVEL") else " ".join(["python -m benchmarks", *arguments])
    settings: dict[str, Any] = {
        "repeats": repeats,
        "duration": timing.duration,
        "warmup": timing.warmup,
        "idle_conns": timing.idle_conns,
        "idle_per_process": timing.idle_per_process,
        "pinned": pinned,
        "source": source,
        "quick": quick,
        "wall_seconds": round(time.monotonic() - started, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_average_after": list(os.getloadavg()),
    }
    markdown = render_markdown(
        summary,
        records,
        scenarios=scenarios,
        servers=servers,
        server_titles={s: SERVERS[s].title for s in servers},
        pairs=compared,
        families={s: SERVERS[s].dialect.family for s in servers},
        machine=machine,
        settings=settings,
        command=command,
    )
    md_path, json_path, png_path = (output / f"{name}{suffix}" for suffix in (".md", ".json", ".png"))
    md_path.write_text(markdown, encoding="utf-8")
    write_json(
        json_path,
        {
            "command": command,
            "settings": settings,
            "machine": machine,
            "scenarios": {
                n: {
                    "title": SCENARIOS[n].title,
                    "description": SCENARIOS[n].description,
                    "target": _target_json(n, summary),
                }
                for n in scenarios
            },
            "servers": {
                s: {"title": SERVERS[s].title, "command": SERVERS[s].command("HOST", 0)} for s in servers
            },
            "pairs": [{"nanosocket": ours, "peer": peer} for ours, peer in compared],
            "summary": {
                sc: {sv: {k: st.as_dict() for k, st in metrics.items()} for sv, metrics in per.items()}
                for sc, per in summary.items()
            },
            "runs": records,
        },
    )
    charted = write_chart(png_path, summary, scenarios, servers, compared)
    print(markdown)
    print(
        f"wrote {md_path}, {json_path}" + (f", {png_path}" if charted else " (no chart: matplotlib missing)")
    )
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
