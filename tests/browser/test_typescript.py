"""nanosocket.d.ts describes nanosocket.js: a usage file compiles with ``tsc --noEmit --strict``,
and a file of misuses is refused line by line.

TypeScript comes from npm into the repository's (gitignored) node_modules: ``make browser-deps``
installs it, and this test does when it is missing. Without node/npm the test fails (unless
NANOSOCKET_SKIP_BROWSER=1), like the browser tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from browser_kit import HERE, ROOT

TSC = ROOT / "node_modules" / ".bin" / "tsc"
TYPESCRIPT = "typescript@5"
FLAGS = ["--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler"]
FLAGS += ["--lib", "es2022,dom"]


@pytest.fixture(scope="module")
def tsc() -> str:
    if os.environ.get("NANOSOCKET_SKIP_BROWSER") == "1":
        pytest.skip("NANOSOCKET_SKIP_BROWSER=1")
    if not TSC.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(
                "npm is missing: run `make browser-deps` (apt-get install -y nodejs npm)", pytrace=False
            )
        command = [npm, "install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", TYPESCRIPT]
        subprocess.run(command, cwd=ROOT, check=True, timeout=300, capture_output=True)
    return str(TSC)


def compile_ts(tsc: str, name: str) -> subprocess.CompletedProcess[str]:
    source = HERE / "typescript" / name
    command = [tsc, *FLAGS, str(source)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_the_declarations_type_a_full_usage_strictly(tsc: str) -> None:
    result = compile_ts(tsc, "usage.ts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_misuses_are_refused(tsc: str) -> None:
    result = compile_ts(tsc, "misuse.ts")
    assert result.returncode != 0
    lines = {int(line) for line in re.findall(r"misuse\.ts\((\d+),\d+\): error TS", result.stdout)}
    source = (HERE / "typescript" / "misuse.ts").read_text().splitlines()
    misuse_lines = {number for number, line in enumerate(source, 1) if number >= 4 and line.strip()}
    assert lines == misuse_lines, result.stdout
