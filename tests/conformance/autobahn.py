"""Run the Autobahn TestSuite (fuzzingclient) against the NanoSocket echo server.

Installs the suite on first use (see autobahn_tooling.py), starts the server on a free loopback
port, runs every selected case against it with a hard timeout, always stops the server, and prints
per-category counts and every failing case with the suite's reason. The summary is also written to
OUTPUT_DIR/summary.md, next to the suite's HTML and JSON reports (OUTPUT_DIR/reports/index.html).

Exit status: 0 when no case failed (OK, NON-STRICT, INFORMATIONAL and UNIMPLEMENTED are
accepted); 1 when a case FAILED or has no result; 2 when the run could not start (tooling install,
bad case list, server not listening).

With --compression MODE (shared or dedicated) the echo server runs with permessage-deflate in that
mode, and the compression cases 12.* and 13.* are no longer excluded by default.

Environment: NANOSOCKET_AUTOBAHN_HOME (where the tooling is installed, default
~/.cache/nanosocket/autobahn); NANOSOCKET_DEBIAN_MIRROR and NANOSOCKET_DEBIAN_SECURITY_MIRROR (where
the Debian 11 python2.7 packages come from, default: the mirrors this machine's apt uses).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from autobahn_report import load_results, machine_line, publish_summary, render_markdown, shown_command
from autobahn_tooling import SUITE_VERSION, InstallError, Tooling, autobahn_home, ensure_tooling

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "build" / "conformance"
DEFAULT_CASES = "*"
#: 12.* and 13.* are permessage-deflate (minutes of wstest CPU): run with --compression.
DEFAULT_EXCLUDE = "12.*,13.*"
#: The 9.* limit cases send a 16 MiB message, and a 4 MiB message in 65 536 fragments.
DEFAULT_SERVER = (
    "{python} -m nanosocket echo-server --host {host} --port {port}"
    " --max-payload-length 16777216 --max-fragments 100000"
)
EXIT_FAILED = 1
EXIT_SETUP = 2

#: Run by the suite's Python 2: expands the case patterns exactly as wstest will. Done up front
#: because wstest waits forever when nothing is selected and dies on an unknown literal case id.
RESOLVE_CASES = """
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename, CaseSetname
from autobahntestsuite.caseset import CaseSet
cases = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
spec = json.loads(sys.argv[1])
unknown = [c for c in spec["cases"] + spec["exclude-cases"] if "*" not in c and c not in cases.CasesIndices]
if unknown:
    sys.stderr.write("unknown case id(s): %s\\n" % ", ".join(unknown))
    sys.exit(3)
sys.stdout.write(json.dumps({"ids": cases.parseSpecCases(spec), "categories": CaseCategories}))
"""


class SetupError(RuntimeError):
    """The run could not start: bad case list, or the server never listened."""


def _log(message: str) -> None:
    print(f"[conformance] {message}", file=sys.stderr, flush=True)


def _patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _free_port(host: str) -> int:
    # The port is released before the server binds it; on loopback the race is negligible and,
    # unlike --port 0, this works for any server command.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def server_argv(template: str, host: str, port: int) -> list[str]:
    """Split a server command template and fill in ``{python}``, ``{host}`` and ``{port}``."""
    values = {"{python}": sys.executable, "{host}": host, "{port}": str(port)}
    argv = []
    for token in shlex.split(template):
        filled = token
        for placeholder, value in values.items():
            filled = filled.replace(placeholder, value)
        argv.append(filled)
    return argv


def build_spec(
    url: str, agent: str, cases: Sequence[str], exclude: Sequence[str], outdir: Path
) -> dict[str, object]:
    """The fuzzingclient spec: one server, the selected cases minus the excluded ones."""
    return {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": url}],
        "cases": list(cases),
        "exclude-cases": list(exclude),
        "exclude-agent-cases": {},
    }


def resolve_cases(tooling: Tooling, spec: dict[str, object], cwd: Path) -> tuple[list[str], dict[str, str]]:
    """The case ids the spec selects, and the suite's category names."""
    # cwd matters: `python -c` puts it first on sys.path, and this directory's autobahn.py would
    # shadow the suite's `autobahn` package.
    done = subprocess.run(
        [str(tooling.python2), "-c", RESOLVE_CASES, json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SetupError(f"could not resolve the case list: {done.stderr.strip()}")
    resolved = json.loads(done.stdout)
    ids: list[str] = resolved["ids"]
    if not ids:
        raise SetupError(f"cases {spec['cases']} minus {spec['exclude-cases']} select no case")
    return ids, resolved["categories"]


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a child started in its own session, and whatever it started, by its process group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


@contextmanager
def running_server(
    argv: Sequence[str], host: str, port: int, log_path: Path, startup: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the server, wait until it accepts TCP connections, and always stop it afterwards."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            deadline = time.monotonic() + startup
            while True:
                if process.poll() is not None:
                    status = process.returncode
                    raise SetupError(f"the server exited with {status} before listening:\n{_tail(log_path)}")
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SetupError(
                            f"the server did not listen on {host}:{port} within {startup:g} s"
                        ) from None
                    time.sleep(0.1)
            yield process
        finally:
            _stop(process, grace=10)


def run_wstest(
    tooling: Tooling, spec_path: Path, log_path: Path, timeout: float, verbose: bool
) -> tuple[int | None, float]:
    """Run the fuzzingclient; return its exit status (None when it hit ``timeout``) and duration."""
    started = time.monotonic()
    argv = tooling.wstest("-m", "fuzzingclient", "-s", str(spec_path))
    with log_path.open("wb") as log_file:
        # Its own session, so a timeout kills wstest and anything it spawned, nothing else.
        process = subprocess.Popen(
            argv,
            stdout=None if verbose else log_file,
            stderr=None if verbose else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=spec_path.parent,
            start_new_session=True,
        )
        try:
            status: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            _stop(process, grace=5)
    return status, time.monotonic() - started


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tests/conformance/autobahn.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help='comma-separated case ids or patterns, e.g. "6.*,7.1.5" (default: %(default)s)',
    )
    parser.add_argument(
        "--exclude",
        default=None,
        help=f'comma-separated cases to leave out; "" runs all (default: {DEFAULT_EXCLUDE},'
        " or nothing with --compression)",
    )
    parser.add_argument(
        "--compression",
        choices=("shared", "dedicated"),
        default=None,
        help="run the server with permessage-deflate in this mode (adds --compression MODE to the"
        " server command) and include 12.* and 13.* unless --exclude says otherwise",
    )
    parser.add_argument(
        "--server-cmd",
        default=DEFAULT_SERVER,
        help="the echo server to test; {python}, {host} and {port} are filled in (default: %(default)s)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to run on (default: %(default)s)"
    )
    parser.add_argument(
        "--agent", default="NanoSocket", help="server name in the reports (default: %(default)s)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="where summary.md and reports/ go (default: build/conformance in the repository)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="hard limit for the wstest run, in seconds (default: 900, or 3600 with --compression:"
        " 12.* and 13.* take about 15 minutes on 2 cores)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=20,
        help="seconds the server has to start listening (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="stream wstest's output instead of logging it")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conformance suite; return the exit status."""
    args = _parse_args(argv)
    if args.timeout is None:
        args.timeout = 3600.0 if args.compression else 900.0
    if args.exclude is None:
        args.exclude = "" if args.compression else DEFAULT_EXCLUDE
    if args.compression:
        args.server_cmd += f" --compression {args.compression}"
    # SIGTERM (a cancelled CI job) must unwind through the `finally` blocks that stop the server
    # and wstest: they run in their own sessions and would otherwise outlive this process.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started_at = datetime.now(UTC)
    started = time.monotonic()
    out: Path = args.output_dir.resolve()
    reports = out / "reports"
    out.mkdir(parents=True, exist_ok=True)
    # Stale per-case files of an earlier run would otherwise sit next to this run's report.
    shutil.rmtree(reports, ignore_errors=True)
    (out / "summary.md").unlink(missing_ok=True)

    port = _free_port(args.host)
    url = f"ws://{args.host}:{port}/"
    cases, exclude = _patterns(args.cases), _patterns(args.exclude)
    spec = build_spec(url, args.agent, cases, exclude, reports)
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    server = server_argv(args.server_cmd, args.host, port)
    try:
        tooling = ensure_tooling(autobahn_home(), _log)
        expected, category_names = resolve_cases(tooling, spec, out)
        _log(f"running {len(expected)} cases against {shlex.join(server)}")
        with running_server(server, args.host, port, out / "server.log", args.startup_timeout) as process:
            status, duration = run_wstest(tooling, spec_path, out / "wstest.log", args.timeout, args.verbose)
            server_status = process.poll()
    except (InstallError, SetupError) as exc:
        _log(f"error: {exc}")
        return EXIT_SETUP
    except KeyboardInterrupt:
        _log("interrupted")
        return 130

    summary = load_results(reports, args.agent, expected)
    summary.category_names = category_names
    notes = []
    if status is None:
        notes.append(f"wstest hit the {args.timeout:g} s timeout and was killed")
    elif status != 0:
        notes.append(f"wstest exited with status {status}")
    if server_status is not None:
        notes.append(f"the server exited with status {server_status} during the run (see server.log)")
    if notes:
        _log("; ".join(notes))
        _log(f"wstest log ({out / 'wstest.log'}), last lines:\n{_tail(out / 'wstest.log')}")
    shown_server = shown_command(server)
    meta = [
        ("suite", f"autobahntestsuite {SUITE_VERSION}, fuzzingclient"),
        ("cases", f"`{', '.join(cases)}` minus `{', '.join(exclude) or 'nothing'}` ({len(expected)} cases)"),
        ("server", f"`{shown_server}`"),
        ("date", started_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("wall time", f"{time.monotonic() - started:.1f} s in all, {duration:.1f} s of it in wstest"),
        ("machine", machine_line()),
        *(("problem", note) for note in notes),
    ]
    markdown = render_markdown(summary, f"Autobahn TestSuite conformance: {args.agent}", meta)
    publish_summary(out, reports, markdown)
    return 0 if summary.passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
