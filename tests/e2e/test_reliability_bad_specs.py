"""Bad EmbeddingImport specs on the dev cluster, with the operator running in the namespace.

``tests/e2e/test_operator_api.py`` (another module) covers 12 invalid specs refused at apply.
This module adds:

- table A: 28 more invalid specs, each refused by the API server at create (schema or CEL) with
  its message, nothing stored, no pod ever created;
- table B: specs the API server must accept (it cannot know the model, the files or the
  cluster's objects), each ending in a Condition with the reason and a Warning Event, and no
  restart loop: at most one importer pod that ran (and exited 78), or a pod that never starts;
- lower-case importer env names, which the importer's settings match case-insensitively.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from reliability_helpers import (
    create_import,
    events_of,
    get_import,
    import_manifest,
    kubectl,
    operator,
    share_tree,
    shared_dir,
)

from devcluster.testing import wait_for

pytestmark = [pytest.mark.reliability]

# (id, spec patch, text expected in the API server's answer)
TABLE_A: list[tuple[str, dict[str, Any], str]] = [
    ("threshold-150pct", {"memoryPolicy.threshold": "150%"}, "spec.memoryPolicy.threshold"),
    ("threshold-0pct", {"memoryPolicy.threshold": "0%"}, "spec.memoryPolicy.threshold"),
    ("threshold-negative", {"memoryPolicy.threshold": "-5Mi"}, "spec.memoryPolicy.threshold"),
    ("threshold-decimal-pct", {"memoryPolicy.threshold": "85.5%"}, "spec.memoryPolicy.threshold"),
    # below the importer's 16Mi floor: refused at apply (CEL), not by the importer after a pod ran
    ("threshold-typo-1mi", {"memoryPolicy.threshold": "1Mi"}, "at least 16Mi"),
    ("batch-size-0", {"embedding.batchSize": 0}, "spec.embedding.batchSize"),
    ("token-budget-0", {"embedding.tokenBudget": 0}, "spec.embedding.tokenBudget"),
    ("threads-negative", {"embedding.threads": -1}, "spec.embedding.threads"),
    ("shards-0", {"parallelism.shards": 0}, "spec.parallelism.shards"),
    ("shards-5000", {"parallelism.shards": 5000}, "less than or equal to 64"),
    ("collection-pattern", {"qdrant.collection": "bad name!"}, "spec.qdrant.collection"),
    ("url-scheme", {"qdrant.url": "ftp://x", "qdrant.embedded": None}, "spec.qdrant.url"),
    (
        "api-key-without-url",
        {"qdrant.apiKeySecretRef": {"name": "s", "key": "k"}},
        "qdrant.apiKeySecretRef needs qdrant.url",
    ),
    (
        "api-key-ref-without-key",
        {
            "qdrant.url": "http://q:6333",
            "qdrant.embedded": None,
            "qdrant.apiKeySecretRef": {"name": "s"},
        },
        "spec.qdrant.apiKeySecretRef.key: Required value",
    ),
    ("no-qdrant-target", {"qdrant.embedded": None}, "set exactly one of qdrant.url"),
    ("relative-host-path", {"sources.hostPath": {"path": "data"}}, "spec.sources.hostPath.path"),
    ("format-unknown", {"sources.format": "xml"}, "spec.sources.format: Unsupported value"),
    ("no-paths", {"sources.paths": []}, "spec.sources.paths"),
    ("absolute-path-glob", {"sources.paths": ["/etc/*"]}, "must be relative"),
    ("empty-jsonl-field", {"sources.jsonlField": ""}, "spec.sources.jsonlField"),
    ("no-sources", {"sources": None}, "spec.sources: Required value"),
    ("chunk-size-0", {"chunking.size": 0}, "spec.chunking.size"),
    (
        "keep-terminated-negative",
        {"memoryPolicy.keepTerminatedPods": -1},
        "spec.memoryPolicy.keepTerminatedPods",
    ),
    (
        "backoff-order",
        {"memoryPolicy.backoffSeconds": 10, "memoryPolicy.maxBackoffSeconds": 5},
        "maxBackoffSeconds must not be below",
    ),
    ("grow-factor-below-1", {"memoryPolicy.growFactor": 0.5}, "spec.memoryPolicy.growFactor"),
    ("ooms-before-grow-0", {"memoryPolicy.oomsBeforeGrow": 0}, "spec.memoryPolicy.oomsBeforeGrow"),
    ("retry-budget-negative", {"memoryPolicy.retryBudget": -1}, "spec.memoryPolicy.retryBudget"),
    (
        "negative-memory-limit",
        {"importer.resources.limits.memory": "-1Gi"},
        "spec.importer.resources.limits.memory",
    ),
    (
        "cpu-garbage",
        {"importer.resources.limits.cpu": "lots"},
        "spec.importer.resources.limits.cpu",
    ),
    ("metrics-port-range", {"importer.metricsPort": 70000}, "spec.importer.metricsPort"),
    (
        "pull-policy",
        {"importer.imagePullPolicy": "Sometimes"},
        "spec.importer.imagePullPolicy: Unsupported value",
    ),
    ("empty-image", {"importer.image": ""}, "spec.importer.image"),
    (
        "env-name-pattern",
        {"importer.env": [{"name": "1BAD", "value": "x"}]},
        "spec.importer.env[0].name",
    ),
    ("suspend-not-bool", {"suspend": "yes"}, "spec.suspend"),
    ("unknown-field", {"bogus": 1}, 'unknown field "spec.bogus"'),
]


def _apply(doc: dict[str, Any]) -> tuple[int, str]:
    import subprocess

    from devcluster.config import paths

    out = subprocess.run(
        [str(paths().bin / "kubectl"), "create", "-f", "-"],
        input=yaml.safe_dump(doc),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.returncode, out.stderr + out.stdout


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    src = shared_dir(tmp_path / "src")
    (src / "a.md").write_text("# A\n\nSome text about vectors.\n")
    share_tree(src)
    return src, shared_dir(tmp_path / "qdrant")


def test_table_a_refused_at_create_with_message(
    crds: list[str], namespace: str, tmp_path: Path, core_v1: client.CoreV1Api
) -> None:
    src, q = _dirs(tmp_path)
    wrong: list[str] = []
    with operator(namespace, tmp_path / "operator.log") as op:
        t = time.monotonic()
        for case, patch, expected in TABLE_A:
            doc = import_manifest(f"bad-{case}", namespace, src, q, **patch)
            code, out = _apply(doc)
            if code == 0 or expected not in out:
                wrong.append(f"{case}: exit {code}: {out.strip()[:300]}")
        # a name that cannot be a label value (CEL on metadata.name)
        long = import_manifest("n" * 64, namespace, src, q)
        code, out = _apply(long)
        if code == 0 or "at most 63 characters" not in out:
            wrong.append(f"long-name: exit {code}: {out.strip()[:300]}")
        assert op.alive(), op.tail()
    assert not wrong, "\n".join(wrong)
    stored = json.loads(kubectl("get", "ei", "-n", namespace, "-o", "json"))["items"]
    assert stored == []
    assert core_v1.list_namespaced_pod(namespace).items == []
    print(
        f"table A: {len(TABLE_A) + 1} invalid specs refused at create in "
        f"{time.monotonic() - t:.1f}s, nothing stored, no pod"
    )


# (id, spec patch, condition reason, text expected in the condition message and the event)
TABLE_B: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "chunk-size-beyond-model",
        {"chunking.size": 5000},
        "ConfigError",
        "chunk size 5000 tokens exceeds",
    ),
    ("unknown-model", {"embedding.model": "no-such-model"}, "ConfigError", "no-such-model"),
    (
        "paths-match-nothing",
        {"sources.paths": ["nothing-here/*.jsonl"]},
        "ConfigError",
        "nothing-here",
    ),
    (
        "missing-api-key-secret",
        {
            "qdrant.url": "http://127.0.0.1:9",
            "qdrant.embedded": None,
            "qdrant.apiKeySecretRef": {"name": "nope", "key": "k"},
        },
        "PodNotStarting",
        "nope",
    ),
    (
        "missing-source-dir",
        {"sources.hostPath": {"path": "/nonexistent/eio-src", "type": "Directory"}},
        "PodNotStarting",
        "/nonexistent/eio-src",
    ),
]


def _condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def test_table_b_accepted_then_reported_by_condition_and_event(
    crds: list[str],
    namespace: str,
    tmp_path: Path,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
) -> None:
    src, q = _dirs(tmp_path)
    names = {}
    with operator(namespace, tmp_path / "operator.log") as op:
        t = time.monotonic()
        for case, patch, _, _ in TABLE_B:
            qdir = shared_dir(q / case)
            doc = import_manifest(
                case, namespace, src, qdir, **{"memoryPolicy.retryBudget": 1, **patch}
            )
            create_import(k8s_api, doc)
            names[case] = case

        def outcome(case: str, reason: str) -> dict[str, Any] | None:
            st = get_import(k8s_api, namespace, case).get("status") or {}
            deg = _condition(st, "Degraded")
            if deg.get("status") == "True" and deg.get("reason") == reason:
                return st
            return None

        pending = {c: r for c, _, r, _ in TABLE_B}
        results: dict[str, dict[str, Any]] = {}

        def all_reported() -> bool:
            for case, reason in list(pending.items()):
                st = outcome(case, reason)
                if st is not None:
                    results[case] = st
                    del pending[case]
            assert op.alive(), op.tail()
            return not pending

        with contextlib.suppress(TimeoutError):  # the assert below says which case is missing
            wait_for(all_reported, 420, "a Degraded condition on every import", interval=2)
        # Deliberate observation window, not a wait for a fact: a restart loop is the absence
        # of quiet, so give it three resync ticks to show more pods.
        time.sleep(3 * op.resync_seconds)
        seconds = time.monotonic() - t
        statuses = {c: get_import(k8s_api, namespace, c).get("status") or {} for c, *_ in TABLE_B}
    assert not pending, "no condition with the expected reason for: " + json.dumps(
        {c: statuses[c].get("conditions") for c in pending}, indent=1
    )
    events = events_of(namespace)
    pods = core_v1.list_namespaced_pod(namespace).items
    problems, no_detail = [], []
    for case, _, reason, text in TABLE_B:
        deg = _condition(statuses[case], "Degraded")
        if reason == "ConfigError":
            suc = _condition(statuses[case], "Succeeded")
            if (suc.get("status"), suc.get("reason")) != ("False", "ConfigError"):
                problems.append(f"{case}: Succeeded condition {suc}")
            evs = [
                e
                for e in events
                if e["involvedObject"].get("name") == case
                and e["involvedObject"].get("kind") == "EmbeddingImport"
                and e["type"] == "Warning"
                and e["reason"] == reason
            ]
            if not evs:
                problems.append(f"{case}: no Warning {reason} event")
        mine = [p for p in pods if (p.metadata.labels or {}).get("eio.dev/import") == case]
        if len(mine) > 1:
            problems.append(
                f"{case}: {len(mine)} pods (a restart loop): {[p.metadata.name for p in mine]}"
            )
        if text not in deg.get("message", ""):
            no_detail.append(f"{case}: {deg.get('message')!r} lacks {text!r}")
    assert not problems, "\n".join(problems)
    print(
        f"table B: {len(TABLE_B)} specs reported by a condition (and a Warning event for "
        f"ConfigError) in {seconds:.0f}s, one pod or none each; without the cause in the "
        f"message: {len(no_detail)}"
    )
    if no_detail:
        pytest.xfail(
            "FINDING: the condition names the reason but not the cause. ConfigError: the "
            "operator shows the terminated container's message (decision.py _classify), but "
            "the dev cluster's node agent sets none for exit 78 (no FallbackToLogsOnError, "
            "nodeagent/containers.py ContainerRun.exited); PodNotStarting: decision.py reports "
            "only waiting.reason, not waiting.message (which names the missing Secret/path). "
            + "; ".join(no_detail)
        )


def test_lower_case_reserved_env_is_refused(
    crds: list[str], namespace: str, tmp_path: Path
) -> None:
    src, q = _dirs(tmp_path)
    for name in ("importer_shard", "Importer_Checkpoint", "importer_qdrant_url"):
        doc = import_manifest(
            f"env-{name.lower().replace('_', '-')}",
            namespace,
            src,
            q,
            **{"importer.env": [{"name": name, "value": "1/2"}]},
        )
        code, out = _apply(doc)
        assert code != 0, (name, out)
        assert "must not set variables" in out, (name, out)
