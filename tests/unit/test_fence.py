"""The fence check (issue 18): a pure function of the stored fence and the run's own attempt."""

from __future__ import annotations

import pytest

from eio_common import contract
from eio_common.contract import fence_of, superseded_by

F = contract.FENCE_ANNOTATION


@pytest.mark.parametrize(
    ("fence", "attempt", "newer"),
    [
        pytest.param(None, 1, None, id="no-fence-yet"),
        pytest.param(1, 1, None, id="own-attempt-is-current"),
        pytest.param(1, 2, None, id="newer-than-the-fence-writes"),
        pytest.param(2, 1, 2, id="older-attempt-is-superseded"),
        pytest.param(7, 3, 7, id="names-the-newer-attempt"),
        pytest.param(5, None, None, id="standalone-run-without-attempt-is-never-fenced"),
        pytest.param(0, 0, None, id="attempt-zero"),
    ],
)
def test_superseded_by(fence: int | None, attempt: int | None, newer: int | None) -> None:
    assert superseded_by(fence, attempt) == newer


@pytest.mark.parametrize(
    ("annotations", "fence"),
    [
        pytest.param(None, None, id="no-annotations"),
        pytest.param({}, None, id="unset"),
        pytest.param({F: "3"}, 3, id="set"),
        pytest.param({F: "0"}, 0, id="zero"),
        pytest.param({F: "three"}, None, id="unreadable-fences-nobody"),
        pytest.param({F: "-1"}, None, id="negative-fences-nobody"),
        pytest.param({"other": "9"}, None, id="other-annotations"),
    ],
)
def test_fence_of(annotations: dict[str, str] | None, fence: int | None) -> None:
    assert fence_of(annotations) == fence


def test_exit_code_is_distinct() -> None:
    codes = {
        contract.EXIT_OK,
        contract.EXIT_TEMPFAIL,
        contract.EXIT_CONFIG,
        contract.EXIT_OOM_KILLED,
        contract.EXIT_SUPERSEDED,
    }
    assert len(codes) == 5
    assert contract.EXIT_SUPERSEDED == 79
