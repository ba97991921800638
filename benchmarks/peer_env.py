"""Installs the peer servers' dependencies on first use, outside the project's own venv.

- Python peers (python-socketio + aiohttp, websockets) get their own venv, ``benchmarks/.peers/venv``,
  created from the interpreter that runs the suite and filled with ``pip``, so the project venv is
  not touched.
- Node peers (``ws``, ``socket.io``) get ``benchmarks/.peers/node/``: a ``package.json`` written here and
  ``npm install``; the servers run with ``NODE_PATH`` pointing at its ``node_modules``.

Both directories are gitignored. An install is redone only when the requirements below change (a
stamp file records them); a lock file keeps two suites from installing at once.

    python -m benchmarks.peer_env          # install both now and print the versions
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = [
    "NODE_DIR",
    "PEERS_DIR",
    "PeerEnvError",
    "node_env",
    "node_versions",
    "python_env",
    "python_versions",
]

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
PY_VENV = PEERS_DIR / "venv"
NODE_DIR = PEERS_DIR / "node"

#: What the Python peers need (websockets >= 13 for ``send(bytes, text=True)``).
PYTHON_REQUIREMENTS = (
    "python-socketio>=5.11,<6",
    "aiohttp>=3.9,<4",
    "websockets>=13",
    "uvloop>=0.19",
    "orjson>=3.9",
)
#: What the Node peers need (npm version ranges).
NODE_PACKAGES = {"socket.io": "^4.7.0", "ws": "^8.16.0"}


class PeerEnvError(RuntimeError):
    """A peer environment could not be installed here."""


@contextmanager
def _locked(name: str) -> Iterator[None]:
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    with (PEERS_DIR / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], cwd: Path | None = None, timeout: float = 900) -> None:
    print(f"benchmarks: installing peers: {' '.join(command)}", file=sys.stderr, flush=True)
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerEnvError(f"{command[0]}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise PeerEnvError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


@cache
def python_env() -> Path:
    """The peers' Python interpreter, installing its venv first when needed."""
    python = PY_VENV / "bin" / "python"
    wanted = "\n".join(PYTHON_REQUIREMENTS)
    stamp = PY_VENV / ".requirements"
    with _locked("venv"):
        if python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return python
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(PY_VENV)])
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *PYTHON_REQUIREMENTS])
        stamp.write_text(wanted)
    return python


@cache
def node_env() -> Path:
    """The Node peers' ``node_modules``, installing it first when needed."""
    modules = NODE_DIR / "node_modules"
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise PeerEnvError(f"{tool} is not installed (Node.js 18 or later is needed for the Node peers)")
    manifest = {
        "name": "nanosocket-bench-peers",
        "private": True,
        "description": "Node peer servers of the NanoSocket benchmark suite (installed by the suite)",
        "dependencies": NODE_PACKAGES,
    }
    wanted = json.dumps(manifest, indent=2) + "\n"
    stamp = NODE_DIR / ".installed"
    with _locked("node"):
        installed = all((modules / p).is_dir() for p in NODE_PACKAGES)
        if installed and stamp.exists() and stamp.read_text() == wanted:
            return modules
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        (NODE_DIR / "package.json").write_text(wanted)
        _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR)
        stamp.write_text(wanted)
    return modules


@cache
def python_versions() -> dict[str, str | None]:
    """Versions of the packages in the peers' venv (and its Python), empty when it is not installed."""
    python = PY_VENV / "bin" / "python"
    if not python.exists():
        return {}
    names = ["python-socketio", "python-engineio", "aiohttp", "websockets", "uvloop", "orjson"]
    code = (
        "import json, platform, sys\nfrom importlib import metadata\n"
        "def v(n):\n    try:\n        return metadata.version(n)\n"
        "    except metadata.PackageNotFoundError:\n        return None\n"
        f"out = {{n: v(n) for n in {names!r}}}\n"
        "out['python (peers venv)'] = platform.python_version()\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=False, timeout=30
    )
    try:
        versions: dict[str, str | None] = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {}
    return versions


@cache
def node_versions() -> dict[str, str | None]:
    """Node's version and those of the installed Node packages (socket.io's engine.io too)."""
    versions: dict[str, str | None] = {}
    node = shutil.which("node")
    if node is not None:
        result = subprocess.run([node, "--version"], capture_output=True, text=True, check=False, timeout=30)
        versions["node"] = result.stdout.strip().lstrip("v") or None
    for package in (*NODE_PACKAGES, "engine.io"):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        try:
            versions[f"{package} (npm)"] = json.loads(manifest.read_text()).get("version")
        except (OSError, ValueError):
            continue
    return versions


def main() -> int:
    try:
        print(python_env())
        print(node_env())
    except PeerEnvError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({**python_versions(), **node_versions()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
