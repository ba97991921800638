"""The fuzz targets of fuzz/targets.py in ``make test``: every input of fuzz/corpus/TARGET (the
seeds, what coverage-guided runs found, and each input that once broke an invariant) is replayed,
then each target gets a short hypothesis run of random inputs. ``make fuzz`` runs the targets
under atheris for longer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS  # noqa: E402


def corpus(target: str) -> list[Path]:
    return sorted((FUZZ / "corpus" / target).iterdir())


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_corpus_is_replayed_without_breaking_an_invariant(target: str) -> None:
    inputs = corpus(target)
    assert len(inputs) >= 5, f"fuzz/corpus/{target} lost its seeds"
    for path in inputs:
        try:
            TARGETS[target](path.read_bytes())
        except BaseException as exc:
            raise AssertionError(f"fuzz/corpus/{target}/{path.name} breaks {target}") from exc


@pytest.mark.parametrize("target", list(TARGETS))
def test_random_inputs_break_no_invariant(target: str) -> None:
    check = TARGETS[target]
    seeds = [path.read_bytes() for path in corpus(target)]

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.binary(max_size=2048) | st.sampled_from(seeds).flatmap(_mutations))
    def run(data: bytes) -> None:
        check(data)

    run()


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with one byte changed, a piece cut out, or random bytes inserted."""
    if not seed:
        return st.binary(max_size=64)
    position = st.integers(0, len(seed) - 1)
    return st.one_of(
        st.tuples(position, st.integers(0, 255)).map(
            lambda pv: seed[: pv[0]] + bytes([pv[1]]) + seed[pv[0] + 1 :]
        ),
        st.tuples(position, position).map(lambda ab: seed[: min(ab)] + seed[max(ab) :]),
        st.tuples(position, st.binary(max_size=32)).map(lambda pb: seed[: pb[0]] + pb[1] + seed[pb[0] :]),
    )
