"""The fence check (issue 18): a pure function of the stored fence and the run's own attempt."""

from __future__ import annotations

from typing import Any

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


class _RevokingApi:
    """Stand-in for the API server's 401 to a deleted pod's bound token (for real it happens
    in tests/e2e/test_reliability_node_loss.py when the pod's deletion wins the race with the
    raised fence): the first read answers, every later one is refused."""

    def __init__(self) -> None:
        self.reads = 0

    def read_namespaced_config_map(self, name: str, namespace: str) -> object:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        self.reads += 1
        if self.reads > 1:
            raise ApiException(status=401, reason="Unauthorized")
        meta = client.V1ObjectMeta(name=name, annotations={contract.FENCE_ANNOTATION: "1"})
        return client.V1ConfigMap(metadata=meta, data={})


def _store(api: _RevokingApi) -> Any:
    """A ConfigMapStore of attempt 1 over ``api`` (no kubeconfig: the API is a stand-in)."""
    from importer.checkpoint_store import ConfigMapStore

    store = ConfigMapStore.__new__(ConfigMapStore)
    store.api, store.namespace, store.name, store.attempt = api, "ns", "cm", 1
    store.description, store._rv, store._exists = "configmap:ns/cm", None, False
    store._annotations, store._read_at = {}, float("-inf")
    return store


def test_a_401_after_a_successful_read_is_a_revoked_attempt() -> None:
    from importer.checkpoint_store import Revoked, Superseded

    store = _store(_RevokingApi())
    store.check_fence()  # answered: fence 1 == attempt 1
    with pytest.raises(Revoked) as err:
        store.check_fence()
    assert isinstance(err.value, Superseded)  # stopped like a fence refusal: exit 79
    assert "revoked this pod's credentials" in str(err.value)


def test_a_401_before_any_read_is_not_taken_for_a_revocation() -> None:
    from kubernetes.client.exceptions import ApiException

    from importer.checkpoint_store import Revoked

    api = _RevokingApi()
    api.reads = 1  # refused from the first read: bad credentials, not a deleted pod
    store = _store(api)
    with pytest.raises(ApiException) as err:
        store.check_fence()
    assert not isinstance(err.value, Revoked)
