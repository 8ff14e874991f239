"""Pod manifests (as the API returns them) reduced to what the decision needs."""

from __future__ import annotations

from typing import Any

from eio_operator.observe import observe_pod


def pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "imp-s1-a4",
            "uid": "u",
            "creationTimestamp": "2026-11-21T10:00:00Z",
            "labels": {"eio.dev/import": "imp", "eio.dev/shard": "1", "eio.dev/attempt": "4"},
            **meta,
        },
        "status": status,
    }


def test_running() -> None:
    p = observe_pod(
        pod(
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "importer",
                        "state": {"running": {"startedAt": "2026-11-21T10:00:05Z"}},
                    }
                ],
            }
        )
    )
    assert p is not None
    assert (p.shard, p.attempt, p.phase, p.is_live, p.terminated) == (1, 4, "Running", True, None)
    assert p.started is not None
    assert p.started.second == 5


def test_oom_killed() -> None:
    p = observe_pod(
        pod(
            {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "importer",
                        "state": {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "OOMKilled",
                                "finishedAt": "2026-11-21T10:01:00Z",
                            }
                        },
                    }
                ],
            }
        )
    )
    assert p is not None
    assert p.terminated is not None
    assert (p.terminated.exit_code, p.terminated.reason, p.is_live) == (137, "OOMKilled", False)


def test_evicted_without_container_state() -> None:
    p = observe_pod(
        pod(
            {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory.",
            }
        )
    )
    assert p is not None
    assert p.evicted
    assert p.terminated is not None
    assert p.terminated.exit_code is None


def test_disruption_target_and_deleting() -> None:
    p = observe_pod(
        pod(
            {
                "phase": "Running",
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                    }
                ],
            },
            deletionTimestamp="2026-11-21T10:02:00Z",
        )
    )
    assert p is not None
    assert (p.evicted, p.deleting, p.is_live) == (True, True, True)
    assert p.disruption == "PreemptionByScheduler"


def test_waiting() -> None:
    p = observe_pod(
        pod(
            {
                "phase": "Pending",
                "containerStatuses": [
                    {"name": "importer", "state": {"waiting": {"reason": "ImagePullBackOff"}}}
                ],
            }
        )
    )
    assert p is not None
    assert (p.waiting_reason, p.is_live) == ("ImagePullBackOff", True)


def test_not_ours() -> None:
    assert observe_pod({"metadata": {"name": "x", "labels": {}}}) is None
