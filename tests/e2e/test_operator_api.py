"""The EmbeddingImport API against the real local API server (devcluster), and the operator
running against it: the schema and CEL rules refuse bad specs at apply time, the printer
columns show, and the operator writes status and rolls real importer pods."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.config import paths
from devcluster.testing import wait_for, with_paths

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "sources": {"configMap": {"name": "texts"}, "paths": ["."], "format": "text"},
    "qdrant": {"url": "http://qdrant:6333", "collection": "c"},
    "importer": {"resources": {"limits": {"memory": "1Gi"}}},
}


def manifest(name: str, namespace: str, **patch: Any) -> dict[str, Any]:
    spec = with_paths(BASE, patch)
    return {
        "apiVersion": "eio.dev/v1alpha1",
        "kind": "EmbeddingImport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _kubectl(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    out = subprocess.run(
        [str(paths().bin / "kubectl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out.returncode, out.stdout, out.stderr


def kubectl(*args: str) -> str:
    code, out, err = _kubectl(*args)
    assert code == 0, f"kubectl {' '.join(args)}: {err}{out}"
    return out


def apply(doc: dict[str, Any]) -> tuple[int, str]:
    code, out, err = _kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    return code, err + out


def get(kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json"))


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"embedding": {"batchSize": -1}}, "spec.embedding.batchSize"),
        ({"importer.resources.limits": {}}, "spec.importer.resources.limits.memory: Required"),
        ({"memoryPolicy": {"threshold": "2Gi"}}, "memoryPolicy.threshold must be below"),
        ({"memoryPolicy": {"threshold": "1Gi"}}, "memoryPolicy.threshold must be below"),
        ({"memoryPolicy": {"maxMemoryLimit": "512Mi"}}, "maxMemoryLimit must not be below"),
        ({"sources.hostPath": {"path": "/x"}}, "exactly one of sources.hostPath"),
        ({"qdrant.embedded": {"hostPath": {"path": "/q"}}}, "exactly one of qdrant.url"),
        ({"sources.paths": ["../etc"]}, "must be relative"),
        ({"importer.env": [{"name": "IMPORTER_SHARD", "value": "0/2"}]}, "must not set variables"),
        ({"importer.resources.limits.memory": "lots"}, "spec.importer.resources.limits.memory"),
        ({"chunking": {"size": 10, "overlap": 10}}, "chunking.overlap must be smaller"),
        ({"importer.resources.requests": {"memory": "2Gi"}}, "requests.memory must not be above"),
        (
            {"sources.includeTools": True, "sources.format": "jsonl"},
            "includeTools applies to Claude conversations only",
        ),
        (
            {"mode": "Continuous", "sources.pollIntervalSeconds": 300},
            "pollIntervalSeconds must be below memoryPolicy.stallSeconds",
        ),
        ({"mode": "Forever"}, "spec.mode: Unsupported value"),
        (
            {"importer.env": [{"name": "IMPORTER_FOLLOW", "value": "true"}]},
            "must not set variables",
        ),
    ],
    ids=[
        "negative-batch-size",
        "missing-memory-limit",
        "threshold-above-limit",
        "threshold-equal-limit",
        "ceiling-below-limit",
        "two-source-volumes",
        "url-and-embedded",
        "path-escapes",
        "reserved-env",
        "bad-quantity",
        "overlap",
        "request-above-limit",
        "tools-without-conversations",
        "poll-above-stall",
        "unknown-mode",
        "reserved-follow",
    ],
)
def test_invalid_specs_are_refused_at_apply(
    crds: list[str], namespace: str, patch: dict[str, Any], expected: str
) -> None:
    code, out = apply(manifest("bad", namespace, **patch))
    assert code != 0, out
    assert expected in out, out


def test_valid_spec_is_accepted_and_defaulted(crds: list[str], namespace: str) -> None:
    code, out = apply(manifest("good", namespace, **{"memoryPolicy": {"threshold": "800Mi"}}))
    assert code == 0, out
    spec = get("ei", "good", namespace)["spec"]
    assert spec["memoryPolicy"]["threshold"] == "800Mi"
    assert spec["memoryPolicy"]["retryBudget"] == 3
    assert spec["memoryPolicy"]["keepTerminatedPods"] == 2
    assert spec["embedding"] == {"batchSize": 32, "tokenBudget": 8192, "threads": 0}
    assert spec["parallelism"] == {"shards": 1}
    assert spec["mode"] == "Once"
    assert (
        spec["sources"]["onDelete"],
        spec["sources"]["pollIntervalSeconds"],
        spec["sources"]["includeTools"],
    ) == ("Keep", 10, False)
    assert spec["suspend"] is False
    assert spec["importer"]["imagePullPolicy"] == "IfNotPresent"


# Thresholds in every form the CRD's pattern admits, a few bad ones, and the 16Mi floor's edge.
THRESHOLDS: list[str | int] = [
    "85%", "100%", "1%", "0", 0, "1e9", "2E8", ".5Gi", "512M", "800Mi", "16Mi", 20_000_000,
    "10Mi", "512k", "12", 1000, "15Mi", "0%", "85.5%", "150%", "500MB", "lots",
]  # fmt: skip


@pytest.mark.parametrize("threshold", THRESHOLDS, ids=[repr(t) for t in THRESHOLDS])
def test_a_threshold_the_api_accepts_is_one_the_importer_runs_with(
    crds: list[str], namespace: str, threshold: str | int
) -> None:
    """One grammar: the API server (pattern + CEL floor) and the importer (the value the
    operator passes in IMPORTER_MEMORY_THRESHOLD) accept exactly the same thresholds."""
    from importer.settings import parse_threshold

    doc = manifest("thr", namespace, suspend=True, memoryPolicy={"threshold": threshold})
    code, _out, err = _kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(doc))
    try:
        parse_threshold(str(threshold))
        importer_ok = True
    except ValueError:
        importer_ok = False
    assert (code == 0) == importer_ok, f"api {'accepted' if code == 0 else 'refused'}: {err}"
    if code != 0:
        assert "spec.memoryPolicy.threshold" in err, err


def test_examples_are_accepted(crds: list[str], namespace: str) -> None:
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "EmbeddingImport":
                doc["metadata"]["namespace"] = namespace
                doc["spec"]["suspend"] = True  # accepted, not run
                code, out = apply(doc)
                assert code == 0, f"{path.name}: {out}"


def test_shards_are_immutable(crds: list[str], namespace: str) -> None:
    assert apply(manifest("fixed", namespace, suspend=True))[0] == 0
    code, out = apply(manifest("fixed", namespace, suspend=True, parallelism={"shards": 2}))
    assert code != 0
    assert "parallelism.shards is immutable" in out


def test_printer_columns_short_name_and_category(crds: list[str], namespace: str) -> None:
    assert apply(manifest("cols", namespace, suspend=True))[0] == 0
    header = kubectl("get", "ei", "-n", namespace).splitlines()[0].split()
    assert header == [
        "NAME", "PHASE", "PROGRESS", "LAG", "RESTARTS", "OOMS", "LAST-SYNC", "VERIFIED", "ACTIVE",
        "AGE",
    ]  # fmt: skip
    assert "cols" in kubectl("get", "embeddings", "-n", namespace)


def test_explain_describes_fields(crds: list[str]) -> None:
    out = kubectl("explain", "embeddingimport.spec.memoryPolicy.threshold")
    assert "percentage" in out


# --- the operator against the real API server -------------------------------------------------
def test_operator_reports_a_suspended_import(operator_process: Any, namespace: str) -> None:
    assert apply(manifest("paused", namespace, suspend=True))[0] == 0

    def suspended() -> Any:
        st = get("ei", "paused", namespace).get("status") or {}
        return st if st.get("phase") == "Suspended" else None

    st = wait_for(suspended, 60, "status.phase Suspended")
    assert st["observedGeneration"] == 1
    assert {c["type"]: c["reason"] for c in st["conditions"]} == {
        "Succeeded": "Suspended",
        "Progressing": "Suspended",
        "Degraded": "AsExpected",
    }
    cm = get("configmap", "paused-ckpt-0", namespace)
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "EmbeddingImport"
    assert (
        kubectl("get", "pods", "-n", namespace, "-l", "eio.dev/import=paused", "-o", "name").strip()
        == ""
    )
    assert "paused" in kubectl("get", "ei", "-n", namespace)


@pytest.mark.slow
def test_operator_rolls_real_importer_pods_to_completion(
    operator_process: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    texts = {f"doc{i}.txt": f"Document {i}. " + "Some words to embed. " * 20 for i in range(4)}
    kubectl(
        "create",
        "configmap",
        "texts",
        "-n",
        namespace,
        *[f"--from-literal={k}={v}" for k, v in texts.items()],
    )
    qdrant = tmp_path_factory.mktemp("qdrant")
    os.chmod(qdrant, 0o777)  # the pods run as UID 65532
    doc = manifest(
        "roll",
        namespace,
        **{
            "qdrant": {"embedded": {"hostPath": {"path": str(qdrant)}}, "collection": "e2e"},
            "memoryPolicy": {"recycleEveryFiles": 1, "backoffSeconds": 1, "stallSeconds": 600},
            "importer.image": "embedding-importer:0.1.0",
            "importer.imagePullPolicy": "Never",
            "embedding": {"threads": 1},
        },
    )
    assert apply(doc)[0] == 0

    def finished() -> Any:
        st = get("ei", "roll", namespace).get("status") or {}
        if st.get("phase") == "Failed":
            raise AssertionError(
                f"import failed: {json.dumps(st, indent=1)}\n{operator_process.log_tail()}"
            )
        return st if st.get("phase") == "Succeeded" else None

    st = wait_for(finished, 600, "status.phase Succeeded")
    assert st["restarts"]["threshold"] >= 1, st
    assert st["progress"] == "4/4 (100%)"
    events = kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=roll"
    )
    assert "Threshold" in events
    assert "Completed" in events


@pytest.mark.slow
def test_operator_grows_the_limit_after_ooms_without_progress_then_fails(
    operator_process: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Every file makes the importer hold 1000 MB more: it is OOM-killed before it can finish
    # one, at any limit up to the 1Gi ceiling, so no attempt makes progress.
    kubectl("create", "configmap", "texts", "-n", namespace, "--from-literal=a.txt=some text")
    qdrant = tmp_path_factory.mktemp("qdrant-oom")
    os.chmod(qdrant, 0o777)
    doc = manifest(
        "oom",
        namespace,
        **{
            "qdrant": {"embedded": {"hostPath": {"path": str(qdrant)}}, "collection": "e2e"},
            "importer.image": "embedding-importer:0.1.0",
            "importer.resources.limits.memory": "600Mi",
            "importer.env": [{"name": "IMPORTER_FAULT_HOLD_MB_PER_FILE", "value": "1000"}],
            "memoryPolicy": {
                "threshold": "0",
                "maxMemoryLimit": "1Gi",
                "oomsBeforeGrow": 2,
                "retryBudget": 1,
                "backoffSeconds": 1,
                "maxBackoffSeconds": 2,
            },
            "embedding": {"threads": 1},
        },
    )
    assert apply(doc)[0] == 0

    def failed() -> Any:
        st = get("ei", "oom", namespace).get("status") or {}
        return st if st.get("phase") == "Failed" else None

    st = wait_for(failed, 600, "status.phase Failed")
    # 600Mi -(2 OOMs)-> 900Mi -(2 OOMs)-> 1Gi, the ceiling: the 1st OOM there is free (1 of
    # oomsBeforeGrow), the 2nd and 3rd count against the budget, and 2 > retryBudget 1 fails.
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Succeeded"] == "BudgetExhausted"
    assert st["restarts"]["oomKilled"] == st["restarts"]["total"] == 7, st["restarts"]
    assert st["shards"][0]["memoryLimit"] == "1Gi"
    assert st["lastRestart"]["reason"] == "OOMKilled"
    limits = {
        p["spec"]["containers"][0]["resources"]["limits"]["memory"]
        for p in json.loads(
            kubectl("get", "pods", "-n", namespace, "-l", "eio.dev/import=oom", "-o", "json")
        )["items"]
    }
    assert "1Gi" in limits
    events = kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=oom"
    )
    assert events.count("MemoryLimitRaised") == 2
    assert "BudgetExhausted" in events
