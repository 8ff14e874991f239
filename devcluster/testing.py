"""Helpers for tests against the dev cluster (used by tests/e2e/conftest.py and tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client

T = TypeVar("T")


def wait_for(
    fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.25, what: str = ""
) -> T:
    """Call ``fn`` until it returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or fn}; last={last!r}")


def pod_phase(api: Any, ns: str, name: str) -> str | None:
    try:
        return str(api.read_namespaced_pod(name, ns).status.phase)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def wait_pod_phase(
    api: Any, ns: str, name: str, phases: tuple[str, ...], timeout: float = 90
) -> Any:
    """Wait until pod ``ns/name`` is in one of ``phases``; return the V1Pod."""

    def check() -> Any:
        pod = api.read_namespaced_pod(name, ns)
        return pod if pod.status and pod.status.phase in phases else None

    return wait_for(check, timeout, what=f"pod {ns}/{name} in {phases}")


def wait_pod_gone(api: Any, ns: str, name: str, timeout: float = 60) -> None:
    wait_for(lambda: pod_phase(api, ns, name) is None, timeout, what=f"pod {ns}/{name} deleted")


def terminated_state(pod: Any, container: str | None = None) -> Any:
    """The ``terminated`` state of a container (the first one by default), or None."""
    for cs in pod.status.container_statuses or []:
        if container is None or cs.name == container:
            return cs.state.terminated
    return None
