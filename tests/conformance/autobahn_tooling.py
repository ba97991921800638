"""Install the Autobahn TestSuite (``wstest``) once per machine, into a private cache directory.

The suite is Python-2-only code (autobahntestsuite 25.10.1 installs on Python 3 but fails on
import), and Debian 12 ships no python2. So the Debian 11 (bullseye) python2.7 packages are
downloaded with a private apt configuration and unpacked with ``dpkg -x``: nothing is installed
system-wide and the system's apt state is never touched. pip for 2.7 is bootstrapped from wheels the
host pip downloads, then the pinned dependency set (requirements-py27.txt) and the suite go in.

Layout of the home directory (``~/.cache/nanosocket/autobahn``, or ``$NANOSOCKET_AUTOBAHN_HOME``)::

    py27/          the unpacked interpreter; the suite lives in py27/usr/local/lib/python2.7
    bin/python2    wrapper: the unpacked interpreter with its private libssl1.1 and libffi7
    bin/wstest     wrapper: the suite's command line
    stamp          what is installed; written last, so an interrupted install is redone
    install.lock   held while installing, so concurrent runs install only once
    logs/          apt and pip output, for when an install fails
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SUITE_VERSION",
    "InstallError",
    "Tooling",
    "autobahn_home",
    "debian_mirrors",
    "ensure_tooling",
]

SUITE_VERSION = "25.10.1"
#: Bumped whenever the install steps change, so existing installs are redone.
LAYOUT_VERSION = 1
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-py27.txt"

DEBIAN_SUITES = ("bullseye", "bullseye-security")
DEBIAN_PACKAGES = (
    "python2.7",
    "python2.7-minimal",
    "libpython2.7-minimal",
    "libpython2.7-stdlib",
    "libpython2.7",
    "libpython2.7-dev",
    "libssl1.1",
    "libffi7",
)
#: The last releases of pip, setuptools and wheel that run on Python 2.7.
BOOTSTRAP_WHEELS = ("pip==20.3.4", "setuptools==44.1.1", "wheel==0.37.1")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
LOCK_WAIT_SECONDS = 20 * 60

#: How wstest is started: the suite has no console script that works without setuptools'
#: entry-point machinery, so call its ``run()`` directly under the name its usage text expects.
WSTEST_BOOT = 'import sys; from autobahntestsuite.wstest import run; sys.argv[0]="wstest"; sys.exit(run())'

Log = Callable[[str], None]


class InstallError(RuntimeError):
    """The tooling could not be installed; the message says which step failed and where its log is."""


@dataclass(frozen=True, slots=True)
class Tooling:
    """An installed suite: how to run its Python 2 interpreter and ``wstest``."""

    home: Path

    @property
    def python2(self) -> Path:
        """The interpreter wrapper (sets LD_LIBRARY_PATH for the unpacked libraries)."""
        return self.home / "bin" / "python2"

    def wstest(self, *args: str) -> list[str]:
        """The argv that runs ``wstest args...``."""
        # -W ignore: cryptography and Twisted print Python 2 deprecation warnings on every start.
        return [str(self.python2), "-W", "ignore", "-c", WSTEST_BOOT, *args]


def autobahn_home() -> Path:
    """Where the tooling lives: ``$NANOSOCKET_AUTOBAHN_HOME`` or ``~/.cache/nanosocket/autobahn``."""
    configured = os.environ.get("NANOSOCKET_AUTOBAHN_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "nanosocket" / "autobahn"


def _stamp_text() -> str:
    # The pins' hash is part of the stamp, so editing a pin (not a comment) triggers a reinstall.
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    pins = hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()[:16]
    return f"autobahntestsuite=={SUITE_VERSION} python2.7=bullseye layout={LAYOUT_VERSION} pins={pins}\n"


def _is_installed(home: Path) -> bool:
    stamp = home / "stamp"
    try:
        return stamp.read_text() == _stamp_text() and (home / "bin" / "python2").exists()
    except OSError:
        return False


def ensure_tooling(home: Path, log: Log) -> Tooling:
    """Return the suite installed under ``home``, installing it first when missing or outdated."""
    if _is_installed(home):
        return Tooling(home)
    home.mkdir(parents=True, exist_ok=True)
    with _install_lock(home / "install.lock", log):
        # Another run may have finished the install while this one waited for the lock.
        if not _is_installed(home):
            started = time.monotonic()
            log(f"installing the Autobahn TestSuite {SUITE_VERSION} into {home} (one-time, about 1 min)")
            _install(home, log)
            log(f"tooling ready after {time.monotonic() - started:.0f} s")
    return Tooling(home)


@contextmanager
def _install_lock(path: Path, log: Log) -> Iterator[None]:
    with path.open("a") as handle:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InstallError(f"gave up waiting for {path} (held by another install)") from None
                if not waiting:
                    log(f"waiting for another run that is installing into {path.parent}")
                    waiting = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------ Debian mirror discovery


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
        elif line[0].isspace() and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def _apt_sources(etc_apt: Path) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every ``deb`` source, deb822 ``.sources`` and one-line ``.list`` alike."""
    found: list[tuple[str, list[str]]] = []
    for path in sorted(etc_apt.glob("sources.list.d/*.sources")):
        for stanza in _deb822_stanzas(path.read_text(errors="replace")):
            if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes") == "no":
                continue
            suites = stanza.get("suites", "").split()
            found.extend((uri, suites) for uri in stanza.get("uris", "").split())
    for path in [etc_apt / "sources.list", *sorted(etc_apt.glob("sources.list.d/*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            # deb [option=value ...] URI suite component...
            match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match:
                found.append((match[1], [match[2]]))
    return found


def debian_mirrors(etc_apt: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian archive and security mirrors this machine's apt uses (env vars override them).

    A machine that can only reach its configured mirror (a CI runner behind a proxy or a local
    mirror) can then still fetch bullseye packages.
    """
    main = os.environ.get("NANOSOCKET_DEBIAN_MIRROR", "")
    security = os.environ.get("NANOSOCKET_DEBIAN_SECURITY_MIRROR", "")
    for uri, suites in _apt_sources(etc_apt):
        if not uri.startswith(("http://", "https://")):
            continue
        if any(s.endswith("-security") for s in suites):
            security = security or uri
        else:
            main = main or uri
    main = main or DEFAULT_MIRROR
    if not security:
        security = main[: -len("/debian")] + "/debian-security" if main.endswith("/debian") else ""
    return main.rstrip("/"), (security or DEFAULT_SECURITY_MIRROR).rstrip("/")


# ------------------------------------------------------------------ install steps


def _run(
    cmd: Sequence[str | Path],
    step: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run one install step, appending its output to ``log_path``; raise InstallError on failure."""
    argv = [str(c) for c in cmd]
    with log_path.open("a") as log_file:
        log_file.write(f"\n$ {shlex.join(argv)}\n")
        log_file.flush()
        result = subprocess.run(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise InstallError(f"{step} failed (exit {result.returncode}); log: {log_path}\n{tail}")


def _install(home: Path, log: Log) -> None:
    py27, bin_dir, logs = home / "py27", home / "bin", home / "logs"
    work = home / "work"  # apt state and downloads; removed once the install succeeds
    (home / "stamp").unlink(missing_ok=True)
    for stale in (py27, bin_dir, logs, work):
        shutil.rmtree(stale, ignore_errors=True)
    for directory in (bin_dir, logs, work / "lists" / "partial", work / "debs", work / "wheels"):
        directory.mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    (work / "empty.d").mkdir()

    _fetch_python27(work, py27, logs / "apt.log", log)
    lib_dirs = sorted({str(p.parent) for p in py27.glob("usr/lib/*/libssl.so.*")})
    lib_dirs += sorted({str(p.parent) for p in py27.glob("usr/lib/*/libpython2.7.so.*")} - set(lib_dirs))
    if not lib_dirs:
        raise InstallError(f"no libssl/libpython2.7 found under {py27}/usr/lib after unpacking")
    _write_script(
        bin_dir / "python2",
        "#!/bin/sh\n"
        "# Debian 11's python2.7, unpacked (not installed); its libssl1.1 and libffi7 live next to it.\n"
        f"export LD_LIBRARY_PATH={shlex.quote(':'.join(lib_dirs))}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"
        "export PYTHONNOUSERSITE=1\n"
        "unset PYTHONPATH PYTHONHOME\n"
        f'exec {shlex.quote(str(py27 / "usr/bin/python2.7"))} "$@"\n',
    )
    python2 = bin_dir / "python2"
    _run([python2, "-c", "import ssl, zlib, ctypes, json"], "the unpacked python2.7", logs / "apt.log")

    log("bootstrapping pip for Python 2.7")
    pip_log = logs / "pip.log"
    wheels = work / "wheels"
    _run(
        [
            sys.executable,
            *("-m", "pip", "download", "--disable-pip-version-check", "--no-deps"),
            *("--only-binary=:all:", "--python-version", "2.7", "--implementation", "cp"),
            *("--abi", "cp27mu", "--platform", f"manylinux1_{platform.machine()}"),
            *("--dest", wheels),
            *BOOTSTRAP_WHEELS,
        ],
        "downloading pip/setuptools/wheel for Python 2.7 with the host pip",
        pip_log,
    )
    pip_wheels = sorted(wheels.glob("pip-*.whl"))
    if not pip_wheels:
        raise InstallError(f"the host pip downloaded no pip wheel into {wheels}; log: {pip_log}")
    # Not inherited from the caller's environment: a PIP_REQUIRE_VIRTUALENV or PIP_USER meant for
    # the host pip would make the Python 2 pip refuse or install elsewhere.
    pip_env = {
        "PIP_REQUIRE_VIRTUALENV": "false",
        "PIP_USER": "false",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    # A wheel is a zip, and pip can run from one: that installs pip without any pip present.
    _run(
        [
            python2,
            pip_wheels[0] / "pip",
            "install",
            "--no-warn-script-location",
            "--no-index",
            "--find-links",
            wheels,
            *BOOTSTRAP_WHEELS,
        ],
        "installing pip into Python 2.7",
        pip_log,
        pip_env,
    )

    log("installing the suite's pinned Python 2 dependencies (compiles wsaccel)")
    pip_install: list[str | Path] = [
        python2,
        "-m",
        "pip",
        "install",
        "--no-warn-script-location",
        "--no-cache-dir",
    ]
    # C extensions without a cp27 wheel (wsaccel) compile against the unpacked headers; Debian's
    # pyconfig.h includes <x86_64-linux-gnu/python2.7/pyconfig.h>, hence the second -I.
    cflags = f"-I{py27 / 'usr/include/python2.7'} -I{py27 / 'usr/include'}"
    build_env = {**pip_env, "CFLAGS": f"{cflags} {os.environ.get('CFLAGS', '')}".strip()}
    _run([*pip_install, "-r", REQUIREMENTS], "installing requirements-py27.txt", pip_log, build_env)
    suite = f"autobahntestsuite=={SUITE_VERSION}"
    _run([*pip_install, "--no-deps", suite], "installing autobahntestsuite", pip_log, pip_env)

    tooling = Tooling(home)
    _write_script(
        bin_dir / "wstest",
        f'#!/bin/sh\nexec {shlex.join(tooling.wstest())} "$@"\n',
    )
    check = subprocess.run(
        tooling.wstest("-a"), capture_output=True, text=True, cwd=home, timeout=120, check=False
    )
    if f"AutobahnTestSuite {SUITE_VERSION}" not in check.stdout + check.stderr:
        raise InstallError(
            f"`wstest -a` does not report version {SUITE_VERSION}:\n{check.stdout}{check.stderr}"
        )
    accel = subprocess.run(
        [python2, "-c", "import wsaccel.utf8validator, wsaccel.xormask"], capture_output=True, check=False
    )
    if accel.returncode != 0:
        log("warning: wsaccel is missing, so the 9.* cases will run slowly")
    shutil.rmtree(work)
    (home / "stamp").write_text(_stamp_text())


def _fetch_python27(work: Path, py27: Path, apt_log: Path, log: Log) -> None:
    """Download the bullseye python2.7 packages with a private apt setup and unpack them."""
    main, security = debian_mirrors()
    log(f"downloading Debian 11 python2.7 packages from {main} and {security}")
    signed = f"[signed-by={DEBIAN_KEYRING}] " if DEBIAN_KEYRING.is_file() else ""
    sources = work / "sources.list"
    sources.write_text(
        f"deb {signed}{main} {DEBIAN_SUITES[0]} main\ndeb {signed}{security} {DEBIAN_SUITES[1]} main\n"
    )
    # Every path apt would read or write is redirected, so the system's lists, caches, pins and
    # locks are neither used nor changed. Sandbox::User=root: the _apt user cannot write into a
    # private directory under $HOME; NoLocking: the lock files belong to the system apt.
    apt_options = [
        *("-o", f"Dir::Etc::SourceList={sources}"),
        *("-o", f"Dir::Etc::SourceParts={work / 'empty.d'}"),
        *("-o", f"Dir::Etc::Preferences={work / 'preferences'}"),
        *("-o", f"Dir::Etc::PreferencesParts={work / 'empty.d'}"),
        *("-o", f"Dir::State::Lists={work / 'lists'}"),
        *("-o", f"Dir::Cache={work / 'cache'}"),
        *("-o", "APT::Sandbox::User=root"),
        *("-o", "Debug::NoLocking=1"),
        "-q",
    ]
    # Error-Mode=any: by default an unreachable mirror is only a warning, and the failure would
    # surface later as a puzzling "Unable to locate package".
    update_options = ["-o", "APT::Update::Error-Mode=any"]
    _run(["apt-get", *apt_options, *update_options, "update"], "apt-get update (bullseye)", apt_log)
    debs = work / "debs"
    _run(
        ["apt-get", *apt_options, "download", *DEBIAN_PACKAGES],
        "apt-get download (python2.7 packages)",
        apt_log,
        cwd=debs,
    )
    py27.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", deb, py27], f"dpkg -x {deb.name}", apt_log)


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)
