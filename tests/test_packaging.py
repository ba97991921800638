"""The wheel ships the browser client, its TypeScript declarations and the dashboard page."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = {"nanosocket.js", "nanosocket.d.ts", "dashboard.html"}


def test_the_wheel_contains_the_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("nanosocket-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {f"nanosocket/static/{name}" for name in STATIC} <= names
        for name in STATIC:
            packaged = archive.read(f"nanosocket/static/{name}")
            assert packaged == (ROOT / "src" / "nanosocket" / "static" / name).read_bytes()
