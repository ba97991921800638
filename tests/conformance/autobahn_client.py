"""Run the Autobahn TestSuite's fuzzingserver against NanoSocket's client side.

Installs the suite on first use (autobahn_tooling.py, shared with autobahn.py), starts
``wstest -m fuzzingserver`` on a free loopback port with the selected cases, runs the echo client
(autobahn_echo_client.py: ``nanosocket.connect`` echoing every message of every case) against it,
always stops the fuzzingserver, and prints per-category counts and every failing case with the
suite's reason, also written to OUTPUT_DIR/summary.md next to the suite's reports.

Exit status as autobahn.py: 0 when no case failed (OK, NON-STRICT, INFORMATIONAL and UNIMPLEMENTED
are accepted), 1 when a case FAILED or has no result, 2 when the run could not start.

With --compression MODE the client offers permessage-deflate in that mode, and the compression
cases 12.* and 13.* are no longer excluded by default.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from autobahn import (
    DEFAULT_EXCLUDE,
    EXIT_FAILED,
    EXIT_SETUP,
    SetupError,
    _log,
    _patterns,
    _stop,
    _tail,
    resolve_cases,
)
from autobahn_report import load_results, machine_line, publish_summary, render_markdown, shown_command
from autobahn_tooling import SUITE_VERSION, InstallError, ensure_tooling
from autobahn_tooling import autobahn_home as tooling_home

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_OUTPUT = REPO / "build" / "conformance-client"
DEFAULT_CLIENT = "{python} " + str(HERE / "autobahn_echo_client.py") + " {url} --agent {agent}"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def build_spec(url: str, cases: Sequence[str], exclude: Sequence[str], outdir: Path) -> dict[str, object]:
    return {
        "url": url,
        "outdir": str(outdir),
        "options": {"failByDrop": False},
        "cases": list(cases),
        "exclude-cases": list(exclude),
        "exclude-agent-cases": {},
    }


def _wait_listening(
    process: subprocess.Popen[bytes], host: str, port: int, startup: float, log: Path
) -> None:
    deadline = time.monotonic() + startup
    while True:
        if process.poll() is not None:
            raise SetupError(f"the fuzzingserver exited with {process.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SetupError(
                    f"the fuzzingserver did not listen on {host}:{port} within {startup:g} s"
                ) from None
            time.sleep(0.2)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tests/conformance/autobahn_client.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", default="*", help='comma-separated case ids or patterns (default: "*")')
    parser.add_argument(
        "--exclude",
        default=None,
        help=f'cases to leave out; "" runs all (default: {DEFAULT_EXCLUDE}, or nothing with --compression)',
    )
    parser.add_argument(
        "--compression",
        choices=("shared", "dedicated"),
        default=None,
        help="the client offers permessage-deflate in this mode; includes 12.* and 13.*",
    )
    parser.add_argument(
        "--client-cmd",
        default=DEFAULT_CLIENT,
        help="the echo client to test; {python}, {url} and {agent} are filled in (default: ours)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--agent", default="NanoSocket", help="client name in the reports")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="hard limit for the client run (default: 900, 3600 with --compression)",
    )
    parser.add_argument("--startup-timeout", type=float, default=60)
    parser.add_argument("--verbose", action="store_true", help="log every case the client runs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.timeout is None:
        args.timeout = 3600.0 if args.compression else 900.0
    if args.exclude is None:
        args.exclude = "" if args.compression else DEFAULT_EXCLUDE
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started_at = datetime.now(UTC)
    started = time.monotonic()
    out: Path = args.output_dir.resolve()
    reports = out / "reports"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(reports, ignore_errors=True)
    (out / "summary.md").unlink(missing_ok=True)

    port = _free_port(args.host)
    url = f"ws://{args.host}:{port}"
    cases, exclude = _patterns(args.cases), _patterns(args.exclude)
    spec = build_spec(url, cases, exclude, reports)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    client = [
        token.replace("{python}", sys.executable).replace("{url}", url).replace("{agent}", args.agent)
        for token in shlex.split(args.client_cmd)
    ]
    if args.compression:
        client += ["--compression", args.compression]
    if args.verbose:
        client.append("--verbose")
    client_status: int | None = None
    try:
        tooling = ensure_tooling(tooling_home(), _log)
        expected, category_names = resolve_cases(tooling, spec, out)
        _log(f"fuzzingserver with {len(expected)} cases; client: {shlex.join(client)}")
        with (out / "wstest.log").open("wb") as wstest_log:
            server = subprocess.Popen(
                # --webport=0: no report web server (it would take port 8080, one run at a time).
                tooling.wstest("-m", "fuzzingserver", "--webport=0", "-s", str(spec_path)),
                stdout=wstest_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=out,
                start_new_session=True,
            )
            try:
                _wait_listening(server, args.host, port, args.startup_timeout, out / "wstest.log")
                client_started = time.monotonic()
                with (out / "client.log").open("wb") as client_log:
                    runner = subprocess.Popen(
                        client,
                        stdout=client_log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    try:
                        client_status = runner.wait(args.timeout)
                    except subprocess.TimeoutExpired:
                        client_status = None
                    finally:
                        _stop(runner, grace=5)
                duration = time.monotonic() - client_started
            finally:
                _stop(server, grace=5)
    except (InstallError, SetupError) as exc:
        _log(f"error: {exc}")
        return EXIT_SETUP
    except KeyboardInterrupt:
        _log("interrupted")
        return 130

    summary = load_results(reports, args.agent, expected)
    summary.category_names = category_names
    notes = []
    if client_status is None:
        notes.append(f"the client hit the {args.timeout:g} s timeout and was killed")
    elif client_status != 0:
        notes.append(f"the client exited with status {client_status} (see client.log)")
    if notes:
        _log("; ".join(notes))
        _log(f"client log ({out / 'client.log'}), last lines:\n{_tail(out / 'client.log')}")
    shown = shown_command(client)
    meta = [
        ("suite", f"autobahntestsuite {SUITE_VERSION}, fuzzingserver"),
        ("cases", f"`{', '.join(cases)}` minus `{', '.join(exclude) or 'nothing'}` ({len(expected)} cases)"),
        ("client", f"`{shown}`"),
        ("date", started_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("wall time", f"{time.monotonic() - started:.1f} s in all, {duration:.1f} s of it running the cases"),
        ("machine", machine_line()),
        *(("problem", note) for note in notes),
    ]
    markdown = render_markdown(summary, f"Autobahn TestSuite conformance (client): {args.agent}", meta)
    publish_summary(out, reports, markdown)
    return 0 if summary.passed and client_status == 0 else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
