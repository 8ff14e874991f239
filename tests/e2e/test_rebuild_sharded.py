"""Change the build settings of a live import with 2 shards (issue 17, the coordinated switch).

A Continuous import of 2 shards (embedded stores, one per shard) is Synced with chunk size 120;
the test patches ``spec.chunking.size`` to 60. The operator ends both followers gracefully
(SpecChanged); the next pods (``IMPORTER_SWITCH_ON_ORDER=true``) fill ``convs--v1`` beside
``convs`` and report it ready; once *both* are ready with the same digest the operator sets the
switch order on both checkpoint ConfigMaps (event ``RebuildSwitchOrdered``), the shards switch,
and once both report the new version active it sets the retire order (old versions deleted).

Throughout, a client pod reads every point ID through the import's read Service (kube-proxy
to either shard's read API, which fans the scroll out to the other shard): every answer must be
the whole old version or the whole new one, never a mix of shards on different versions; the
final points equal a fresh standalone import with chunk size 60.

Kubelet tier only: the two shards' pods each need their own network namespace to serve the
read API on port 6333 and Services that route (on the node agent every pod shares the host
network, so the second shard cannot serve reads, and there is no kube-proxy). The importer runs
from the built image: rebuild it (hack/build-images.sh) once the importer side has landed.

What it expects of the importer (``IMPORTER_SWITCH_ON_ORDER=true``; for the lead, unchecked
until both sides land): each shard reports ``build.target``, ``build.readyAt`` and one
``build.digest`` for both shards (same settings), keeps serving the old version and writing
heartbeats while it waits; switches when its ConfigMap's ``eio.dev/switch-build`` equals its
digest; a fan-out read never combines versions (the read asked of one shard is answered by
every shard from the same version, the old ones kept open until the retire); reports
``target`` None with the digest active after the switch; deletes the old version (``convs``)
on ``eio.dev/retire-build``; the versions are ``convs--v1`` on both shards.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("flow_helpers")

from flow_helpers import NamespacedOperator, apply, import_events, world_dir  # noqa: E402
from kubernetes import client  # noqa: E402
from reliability_helpers import (  # noqa: E402
    create_import,
    get_import,
    import_manifest,
    importer_testlib,
    patch_spec,
    share_tree,
)
from test_continuous_import import suspend_and_wait, wait_synced  # noqa: E402
from test_kubelet_tier import (  # noqa: E402
    KUBELET_TIER_ONLY,
    client_lines,
    read_client_pod,
    read_service_ip,
    store_for_pods,
)

from devcluster.testing import kubectl, wait_for  # noqa: E402

pytest_plugins = ["flow_helpers"]
# two shards' read APIs need their own network namespaces and a Service that routes
pytestmark = KUBELET_TIER_ONLY

NAME = "follow"  # wait_synced and suspend_and_wait of test_continuous_import name it so
SHARDS = 2
COLLECTION = "convs"
# The client: one scroll of every point ID through the read Service (one request, so a paged
# scroll across the switch cannot mix), three a second, one line per attempt:
# "<unix time> ok <count> <sha256 of the sorted IDs, 16 hex>" or "<unix time> error <kind>".
ID_READER = """
import hashlib, json, sys, time, urllib.request
url = sys.argv[1] + "/collections/" + sys.argv[2] + "/points/scroll"
body = json.dumps({"limit": 1000000, "with_payload": False}).encode()
while True:
    t = time.time()
    try:
        req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            ids = sorted(str(p["id"]) for p in json.loads(resp.read())["result"]["points"])
        line = f"ok {len(ids)} " + hashlib.sha256("\\n".join(ids).encode()).hexdigest()[:16]
    except Exception as e:
        line = f"error {type(e).__name__}"
    print(f"{t:.3f} {line}", flush=True)
    time.sleep(max(0.0, 0.33 - (time.time() - t)))
"""
ANSWER = re.compile(r"^(\d+\.\d+) (?:ok (\d+) ([0-9a-f]{16})|error)\b")


@dataclass(frozen=True)
class IdAnswer:
    at: float  # the client's clock (this machine's)
    count: int | None  # None: the read failed (a shard being rolled answers 503)
    digest: str | None


def id_digest(ids: set[str]) -> str:
    """The client's digest of a set of point IDs."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def id_answers(namespace: str) -> list[IdAnswer]:
    return [
        IdAnswer(float(m.group(1)), int(m.group(2)), m.group(3))
        if m.group(2) is not None
        else IdAnswer(float(m.group(1)), None, None)
        for m in client_lines(namespace, ANSWER)
    ]


def _condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def sharded_import(namespace: str, src: Path, qdrant: Path) -> dict[str, Any]:
    doc = import_manifest(NAME, namespace, src, qdrant, **{
        "mode": "Continuous", "sources.pollIntervalSeconds": 2, "chunking.size": 120,
        "qdrant.collection": COLLECTION, "parallelism.shards": SHARDS,
    })  # fmt: skip
    doc["spec"]["importer"].pop("metricsPort")  # own network namespaces: the default is fine
    return doc


def watch_rebuilding(api: client.ApiClient, namespace: str, seen: list[str]) -> bool:
    """Record each Rebuilding=True message; True once searches read the new version."""
    st = get_import(api, namespace, NAME).get("status") or {}
    c = _condition(st, "Rebuilding")
    if c.get("status") == "True" and (not seen or seen[-1] != c.get("message")):
        seen.append(str(c.get("message")))
    return st.get("activeVersion") == f"{COLLECTION}--v1" and c.get("reason") == "Current"


def orders_on_configmaps(namespace: str) -> list[dict[str, str]]:
    """The switch and retire orders on each shard's checkpoint ConfigMap, with its digest."""
    out = []
    for i in range(SHARDS):
        cm = json.loads(kubectl("get", "cm", f"{NAME}-ckpt-{i}", "-n", namespace, "-o", "json"))
        ann = cm["metadata"].get("annotations") or {}
        build = json.loads(cm["data"]["checkpoint.json"]).get("build") or {}
        out.append({"switch": ann.get("eio.dev/switch-build", ""),
                    "retire": ann.get("eio.dev/retire-build", ""),
                    "digest": build.get("digest", "")})  # fmt: skip
    return out


def retired(namespace: str) -> bool:
    """Every shard reports one digest, and its ConfigMap carries the switch and the retire
    order for it."""
    orders = orders_on_configmaps(namespace)
    digests = {o["digest"] for o in orders}
    return len(digests) == 1 and all(
        o["digest"] and o["switch"] == o["retire"] == o["digest"] for o in orders
    )


def assert_never_mixed(answers: list[IdAnswer], old: str, new: str) -> None:
    """Every answered read is the whole old version or the whole new one, and the switch
    happens once: no old answer after the first new one."""
    digests = [a.digest for a in answers if a.digest is not None]
    mixed = sorted({d for d in digests if d not in (old, new)})
    detail = f"{len(digests)} answers of {len(answers)}; old {old}, new {new}"
    assert not mixed, (
        f"answers of neither version (shards on different versions): {mixed}; {detail}"
    )
    assert new in digests, detail
    # the old version was read before the patch (``_stable_answer``); after it a read may or may
    # not land on it before the switch (the new pods fill 9 files in seconds), but never after
    olds = [i for i, d in enumerate(digests) if d == old]
    assert not olds or digests.index(new) > max(olds), detail
    print(f"\nreads through {NAME}-reads over the rebuild: {detail}")


def test_a_sharded_rebuild_switches_every_shard_at_once(
    namespace: str,
    namespaced_operator: NamespacedOperator,
    core_v1: client.CoreV1Api,
    k8s_api: client.ApiClient,
) -> None:
    lib = importer_testlib()
    base, src = _world(lib)
    qdrant = store_for_pods(base)
    try:
        t0 = datetime.now(UTC)
        create_import(k8s_api, sharded_import(namespace, src, qdrant))
        url = f"http://{read_service_ip(core_v1, k8s_api, namespace, NAME)}:6333"
        apply(read_client_pod(namespace, url, ID_READER, [url, COLLECTION]))
        wait_synced(k8s_api, namespace, namespaced_operator, t0, 900)
        old = _stable_answer(namespace)
        first = len(id_answers(namespace))
        patch_spec(k8s_api, namespace, NAME, {"chunking": {"size": 60}})
        seen: list[str] = []
        wait_for(lambda: watch_rebuilding(k8s_api, namespace, seen), 900,
                 "every shard switched to convs--v1", interval=0.5,
                 diagnose=lambda: namespaced_operator.tail(80))  # fmt: skip
        st = get_import(k8s_api, namespace, NAME)["status"]
        try:
            _assert_status_and_events(core_v1, namespace, st, seen)
        except AssertionError:
            print(_dump(namespace), namespaced_operator.tail(150))
            raise
        wait_for(lambda: retired(namespace), 120, "the retire order on every shard",
                 diagnose=lambda: json.dumps(orders_on_configmaps(namespace)))  # fmt: skip
        new = _stable_answer(namespace, other_than=old)
        suspend_and_wait(k8s_api, core_v1, namespace)
        answers = id_answers(namespace)[first:]
    finally:
        kubectl("delete", "pod", "read-client", "-n", namespace, "--grace-period=0",
                "--wait=false", check=False)  # fmt: skip
    points = _final_points(lib, qdrant, src, base)
    assert id_digest(set(points)) == new
    assert_never_mixed(answers, old, new)


def _dump(namespace: str) -> str:
    """The shards' checkpoints, orders and importer logs (current and previous containers)."""
    out = [kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)]
    for i in range(SHARDS):
        out.append(kubectl("get", "cm", f"{NAME}-ckpt-{i}", "-n", namespace, "-o", "yaml",
                           check=False))  # fmt: skip
    pods = kubectl("get", "pods", "-n", namespace, "-o", "name", check=False).split()
    for pod in pods:
        for prev in ([], ["--previous"]):
            out.append(f"--- logs {pod} {prev}")
            out.append(kubectl("logs", pod, "-n", namespace, "--tail=60", *prev, check=False))
    return "\n".join(str(x) for x in out)


def _world(lib: Any) -> tuple[Path, Path]:
    """A directory the pods may read, with the sources (4 JSONL files: 2 per shard)."""
    base = world_dir("eio-kubelet-rebuild-")
    src = lib.make_corpus(base / "data", seed=1717, conversations=4, turns=12, jsonl_files=4,
                          records=10, markdown=1, broken=False)  # fmt: skip
    share_tree(base)
    return base, src


def _stable_answer(namespace: str, other_than: str | None = None) -> str:
    """The digest the last five reads agree on (other than ``other_than``): the old version
    while the import is Synced, the new one once every shard has switched."""

    def stable() -> str | None:
        last = id_answers(namespace)[-5:]
        got = {a.digest for a in last}
        one = got.pop() if len(last) == 5 and len(got) == 1 else None
        return one if one and one != other_than else None

    what = "five equal answers through the read Service" + (" (a new one)" if other_than else "")
    return str(wait_for(stable, 120, what, interval=1))


def _assert_status_and_events(
    core: client.CoreV1Api, namespace: str, st: dict[str, Any], seen: list[str]
) -> None:
    """Rebuilding was True with the shards' readiness, is False/Current now; the events."""
    print("Rebuilding while filling:", json.dumps(seen, indent=1))
    assert seen, "Rebuilding=True was never observed"
    assert any(f"/{SHARDS} shards" in m for m in seen), seen  # "ready 1/2 shards; waiting ..."
    assert st["build"].get("target") is None, st["build"]
    assert st["restarts"]["total"] == 0, st["restarts"]  # the roll for new settings
    reasons = [r for _, r in import_events(core, NAME, namespace)]
    assert reasons.count("RebuildStarted") == 1, reasons
    assert reasons.count("RebuildSwitchOrdered") == 1, reasons
    assert reasons.count("RebuildSwitched") == 1, reasons
    assert "SpecChanged" in reasons, reasons  # each live pod of the old settings ended


def _final_points(lib: Any, qdrant: Path, src: Path, base: Path) -> dict[str, Any]:
    """The points of both shards' active versions equal a fresh import with chunk size 60,
    and the old versions are gone (keepOldVersions 0)."""
    points: dict[str, Any] = {}
    for i in range(SHARDS):
        store = qdrant / f"shard-{i}"
        assert not (store / COLLECTION).exists(), f"shard {i} kept its old version"
        points.update(lib.read_points(store, COLLECTION))
    ref = lib.Workspace(base / "ref", src)
    r = ref.run("--batch-size", "8", "--threads", "1", "--chunk-size", "60", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    lib.assert_same_points(points, ref.points())
    return points
