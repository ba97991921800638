"""The conformance run's report reading and mirror discovery, on fabricated files (no suite needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from autobahn_report import load_results, render_markdown
from autobahn_tooling import debian_mirrors


def _write_report(reports: Path, agent: str, verdicts: dict[str, str]) -> None:
    reports.mkdir()
    index = {}
    for case_id, behavior in verdicts.items():
        name = f"case_{case_id.replace('.', '_')}.json"
        index[case_id] = {
            "behavior": behavior,
            "behaviorClose": "OK",
            "remoteCloseCode": 1000,
            "duration": 3,
            "reportfile": name,
        }
        detail = {
            "result": f"result of {case_id}",
            "resultClose": "Connection was properly closed",
            "description": f"Case {case_id} does things.<br><br>MESSAGE:<br>00ff",
            "expectation": "Echo.",
        }
        (reports / name).write_text(json.dumps(detail))
    (reports / "index.json").write_text(json.dumps({agent: index}))


def test_counts_verdicts_and_fails_on_failed_unknown_and_missing(tmp_path: Path) -> None:
    verdicts = {
        "1.1.1": "OK",
        "6.4.3": "NON-STRICT",
        "7.1.6": "INFORMATIONAL",
        "12.1.1": "UNIMPLEMENTED",
        "7.1.5": "FAILED",
        "9.10.1": "SOMETHING NEW",
    }
    _write_report(tmp_path / "reports", "Agent", verdicts)
    summary = load_results(tmp_path / "reports", "Agent", [*verdicts, "2.1"])

    assert [r.case_id for r in summary.failures] == ["2.1", "7.1.5", "9.10.1"]
    assert not summary.passed
    assert summary.counts()["7"] == {
        "OK": 0,
        "NON-STRICT": 0,
        "INFORMATIONAL": 1,
        "UNIMPLEMENTED": 0,
        "FAILED": 1,
        "other": 0,
    }
    assert summary.counts()["2"]["FAILED"] == 1
    assert summary.counts()["9"]["other"] == 1
    assert summary.headline() == "2 passed, 1 non-strict, 3 failed, 1 unimplemented of 7 cases"

    markdown = render_markdown(summary, "Title", [("server", "`echo`")])
    assert "**FAIL: 2 passed, 1 non-strict, 3 failed" in markdown
    assert "- **7.1.5** FAILED (close OK, server's close code 1000): result of 7.1.5." in markdown
    assert "  - case: Case 7.1.5 does things. Expected: Echo." in markdown
    assert "- **2.1** MISSING: no result" in markdown


def test_accepted_verdicts_pass(tmp_path: Path) -> None:
    verdicts = {"1.1.1": "OK", "6.4.3": "NON-STRICT", "7.1.6": "INFORMATIONAL"}
    _write_report(tmp_path / "reports", "Agent", verdicts)
    summary = load_results(tmp_path / "reports", "Agent", verdicts)
    assert summary.passed
    assert "**PASS: 2 passed, 1 non-strict, 0 failed" in render_markdown(summary, "T", [])


def test_missing_report_fails_every_expected_case(tmp_path: Path) -> None:
    summary = load_results(tmp_path, "Agent", ["1.1.1", "1.1.2"])
    assert [r.behavior for r in summary.results] == ["MISSING", "MISSING"]
    assert not summary.passed


def test_nothing_selected_is_not_a_pass(tmp_path: Path) -> None:
    assert not load_results(tmp_path, "Agent", []).passed


def test_a_single_agent_under_another_name_is_used(tmp_path: Path) -> None:
    _write_report(tmp_path / "reports", "SelfNamed/1.0", {"1.1.1": "OK"})
    summary = load_results(tmp_path / "reports", "Agent", ["1.1.1"])
    assert summary.agent == "SelfNamed/1.0"
    assert summary.passed


def test_debian_mirrors_from_deb822_and_one_line_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NANOSOCKET_DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("NANOSOCKET_DEBIAN_SECURITY_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert debian_mirrors(tmp_path) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )

    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] https://local/debian bookworm main\n")
    assert debian_mirrors(tmp_path) == ("https://local/debian", "https://local/debian-security")

    monkeypatch.setenv("NANOSOCKET_DEBIAN_MIRROR", "http://override/debian")
    assert debian_mirrors(tmp_path)[0] == "http://override/debian"
