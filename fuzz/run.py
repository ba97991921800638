"""Coverage-guided fuzzing of one target of fuzz/targets.py with atheris (libFuzzer).

    python fuzz/run.py TARGET [libFuzzer options] [corpus directories]

``make fuzz`` runs every target for FUZZ_SECONDS each, reading the seeds of fuzz/corpus/TARGET
and writing what it finds to build/fuzz/TARGET (new inputs) and build/fuzz/crashes (inputs that
broke an invariant). A crash is fixed, then its input is copied into fuzz/corpus/TARGET, where
tests/test_fuzz.py replays it on every ``make test``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["nanosocket", "targets"]):
    from targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
