"""Read an Autobahn TestSuite fuzzingclient report and summarize it as markdown.

The suite writes ``index.json`` (agent -> case id -> behavior, close behavior, remote close code,
per-case report file) and one JSON file per case with the suite's explanation (``result``). A case
that was selected but has no entry (the server died or hung, or wstest was cut short) counts as
failed, so a crashed run can never look green.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "CaseResult", "Summary", "load_results", "render_markdown"]

#: The suite's overall verdicts, in report order; anything else lands in "other".
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "other")
#: Verdicts that do not fail the run. UNIMPLEMENTED is what 12.*/13.* give when the server declines
#: permessage-deflate, an optional extension; an unknown verdict is treated as a failure.
ACCEPTED = frozenset({"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"})
MISSING = "MISSING"


def case_key(case_id: str) -> tuple[int, ...]:
    """Numeric sort key: 9.10 sorts after 9.9."""
    return tuple(int(part) if part.isdigit() else -1 for part in case_id.split("."))


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's verdict, as the suite reported it (or MISSING when it reported nothing)."""

    case_id: str
    behavior: str
    behavior_close: str = ""
    remote_close_code: int | None = None
    duration_ms: int | None = None
    #: The suite's own explanation of the verdict (the per-case report's "result"/"resultClose").
    reason: str = ""
    #: What the case does and what it expects of the server, from the per-case report.
    description: str = ""
    expectation: str = ""

    @property
    def category(self) -> str:
        """The top-level case number: "7" for 7.1.5."""
        return self.case_id.split(".", 1)[0]

    @property
    def column(self) -> str:
        """The count column this case goes in; a missing result counts as FAILED."""
        if self.behavior == MISSING:
            return "FAILED"
        return self.behavior if self.behavior in COLUMNS else "other"

    @property
    def failed(self) -> bool:
        """Whether this case fails the run."""
        return self.behavior not in ACCEPTED


@dataclass(slots=True)
class Summary:
    """All results of one run, plus the suite's category names for the table."""

    agent: str
    results: list[CaseResult]
    category_names: Mapping[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Category -> column -> number of cases, categories in numeric order."""
        table: dict[str, dict[str, int]] = {}
        for result in sorted(self.results, key=lambda r: case_key(r.case_id)):
            table.setdefault(result.category, dict.fromkeys(COLUMNS, 0))[result.column] += 1
        return table

    def with_behavior(self, *behaviors: str) -> list[CaseResult]:
        """The cases with one of these verdicts, in case order."""
        return [r for r in self.results if r.behavior in behaviors]

    @property
    def failures(self) -> list[CaseResult]:
        """The cases that fail the run (FAILED, unknown verdicts, missing results)."""
        return [r for r in self.results if r.failed]

    @property
    def passed(self) -> bool:
        """True when no case failed and at least one case ran."""
        return bool(self.results) and not self.failures

    def headline(self) -> str:
        """``N passed, M non-strict, K failed, U unimplemented of T cases``."""
        passed = len(self.with_behavior("OK", "INFORMATIONAL"))
        return (
            f"{passed} passed, {len(self.with_behavior('NON-STRICT'))} non-strict, "
            f"{len(self.failures)} failed, {len(self.with_behavior('UNIMPLEMENTED'))} unimplemented"
            f" of {len(self.results)} cases"
        )


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _text(value: object) -> str:
    """One line of plain text from the suite's HTML-ish strings (the description holds the
    payload after a <br>, which is noise in a summary)."""
    return " ".join(str(value or "").split("<br", 1)[0].split())


def _sentence(text: str) -> str:
    return text if not text or text.endswith(".") else text + "."


def _reason(detail: Mapping[str, Any]) -> str:
    result, close = _text(detail.get("result")), _text(detail.get("resultClose"))
    if close == result:  # the suite often repeats one sentence in both fields
        close = ""
    return " ".join(filter(None, (_sentence(result), close and "Close: " + _sentence(close))))


def load_results(reports: Path, agent: str, expected: Iterable[str]) -> Summary:
    """Read ``reports/index.json`` for ``agent``; every expected case without a result is MISSING.

    When the report holds exactly one agent under another name (a server that names itself), that
    agent is used.
    """
    index = _read_json(reports / "index.json")
    entries: Mapping[str, Any] = {}
    if isinstance(index, dict):
        if agent in index:
            entries = index[agent]
        elif len(index) == 1:
            agent, entries = next(iter(index.items()))
    results: dict[str, CaseResult] = {}
    for case_id, entry in entries.items():
        detail = _read_json(reports / str(entry.get("reportfile", ""))) if entry.get("reportfile") else None
        code = entry.get("remoteCloseCode")
        duration = entry.get("duration")
        results[case_id] = CaseResult(
            case_id=case_id,
            behavior=str(entry.get("behavior")),
            behavior_close=str(entry.get("behaviorClose") or ""),
            remote_close_code=code if isinstance(code, int) else None,
            duration_ms=duration if isinstance(duration, int) else None,
            reason=_reason(detail) if isinstance(detail, dict) else "",
            description=_text(detail.get("description")) if isinstance(detail, dict) else "",
            expectation=_text(detail.get("expectation")) if isinstance(detail, dict) else "",
        )
    for case_id in expected:
        if case_id not in results:
            reason = "no result: the server died or hung, or wstest was stopped before this case"
            results[case_id] = CaseResult(case_id, MISSING, reason=reason)
    return Summary(agent, sorted(results.values(), key=lambda r: case_key(r.case_id)))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    # Padded, so the markdown reads as a table in a terminal too.
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


def _case_lines(result: CaseResult, detailed: bool) -> list[str]:
    close = [f"close {result.behavior_close}"] if result.behavior_close else []
    if result.behavior != MISSING:
        code = result.remote_close_code
        close.append("no close code from the server" if code is None else f"server's close code {code}")
    facts = f" ({', '.join(close)})" if close else ""
    reason = f": {result.reason}" if result.reason else ""
    lines = [f"- **{result.case_id}** {result.behavior}{facts}{reason}"]
    if detailed and result.description:
        expected = f" Expected: {result.expectation}" if result.expectation else ""
        lines.append(f"  - case: {_sentence(result.description)}{expected}")
    return lines


def render_markdown(summary: Summary, title: str, meta: Sequence[tuple[str, str]]) -> str:
    """The run's summary: headline, run facts, per-category counts, failing and non-strict cases."""
    verdict = "PASS" if summary.passed else "FAIL"
    lines = [f"# {title}", "", f"**{verdict}: {summary.headline()}** (agent `{summary.agent}`)", ""]
    lines += _table(["", ""], [(f"{key}", value) for key, value in meta])
    counts = summary.counts()
    rows = [
        [
            category,
            summary.category_names.get(category, ""),
            str(sum(row.values())),
            *(str(row[c]) for c in COLUMNS),
        ]
        for category, row in counts.items()
    ]
    totals = [str(sum(row[c] for row in counts.values())) for c in COLUMNS]
    rows.append(["all", "", str(len(summary.results)), *totals])
    lines += ["", "## Results per category", ""]
    lines += _table(["category", "name", "cases", *COLUMNS], rows)
    lines += ["", "FAILED includes cases without a result; `other` is any verdict the suite adds later.", ""]

    failures = summary.failures
    lines += [f"## Failing cases ({len(failures)})", ""]
    lines += [line for r in failures for line in _case_lines(r, detailed=True)] or ["None."]
    for label in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
        cases = summary.with_behavior(label)
        if not cases:
            continue
        lines += ["", f"## {label} cases ({len(cases)})", ""]
        if label == "UNIMPLEMENTED":
            lines.append(", ".join(r.case_id for r in cases))
        else:
            lines += [line for r in cases for line in _case_lines(r, detailed=label == "NON-STRICT")]
    return "\n".join(lines) + "\n"


def shown_command(argv: Sequence[str]) -> str:
    """A command line for the summary, with this interpreter's path shown as ``python``."""
    return " ".join("python" if arg == sys.executable else shlex.quote(arg) for arg in argv)


def machine_line() -> str:
    """The machine the run was made on, for the summary's metadata."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )


def publish_summary(out: Path, reports: Path, markdown: str) -> None:
    """Write ``markdown`` to OUT/summary.md and print it with where the reports are."""
    (out / "summary.md").write_text(markdown)
    print(markdown)
    print(f"summary: {out / 'summary.md'}\nreports: {reports / 'index.html'}")
