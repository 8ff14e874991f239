"""Chaos on the dev cluster: the operator SIGKILLed 10 times during imports with several shards.

Two imports of 2 shards each roll their importer pods every 2 files (planned exits 75). The
operator (watching only this test's namespace) is killed at random moments -- half of them
shortly after an importer pod ended, when the operator is between writing status and creating
the next pod -- and restarted after a random pause. A watch on the namespace's pods records
every moment at which a shard had more than one live pod. Afterwards: every import Succeeded,
no shard ever had two live pods, every pod's ending was counted exactly once
(status.restarts.threshold == the number of pods that exited 75), progress and counts match the
files, and the vectors equal one uninterrupted standalone run's.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path

import pytest
from kubernetes import client
from reliability_helpers import (
    OperatorRunner,
    PodWatcher,
    create_import,
    get_import,
    import_manifest,
    importer_testlib,
    share_tree,
    shared_dir,
)

from devcluster.testing import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

lib = importer_testlib()
KILLS = 10
IMPORTS = ("chaos-a", "chaos-b")
SHARDS = 2
# per import: 24 per shard, a planned roll every 2 files -> ~12 pods per shard, so that even
# on an idle machine the imports outlast 10 kills (24 files finished after 9 on an idle one)
FILES = 48


def _corpus(root: Path, seed: int) -> Path:
    src = shared_dir(root)
    rnd = random.Random(seed)
    for i in range(FILES):
        paras = [lib.sentence(rnd, rnd.randint(8, 40)) for _ in range(3)]
        (src / f"doc-{i:02d}.md").write_text(f"# Doc {i}\n\n" + "\n\n".join(paras) + "\n")
    share_tree(src)
    return src


def test_operator_killed_10_times_imports_complete_one_pod_per_shard(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    sources = {name: _corpus(tmp_path / name / "src", seed=i) for i, name in enumerate(IMPORTS)}
    qdrant = {name: shared_dir(tmp_path / name / "qdrant") for name in IMPORTS}
    watcher = PodWatcher(k8s_api, namespace).start()
    op = OperatorRunner(namespace, tmp_path / "operator.log", wait_ready=False)
    op.start()
    rnd = random.Random(1121)
    kills: list[str] = []
    t0 = time.monotonic()
    try:
        for name in IMPORTS:
            create_import(
                k8s_api,
                import_manifest(
                    name,
                    namespace,
                    sources[name],
                    qdrant[name],
                    **{"parallelism.shards": SHARDS, "memoryPolicy.recycleEveryFiles": 2},
                ),
            )

        def phases() -> dict[str, str | None]:
            return {
                n: (get_import(k8s_api, namespace, n).get("status") or {}).get("phase")
                for n in IMPORTS
            }

        deadline = time.monotonic() + 900
        while len(kills) < KILLS and time.monotonic() < deadline:
            if all(p == "Succeeded" for p in phases().values()):
                break
            # the random sleeps pick the moment of the kill (what the test varies)
            if rnd.random() < 0.5:
                # right after an importer pod ended: between status write and pod creation
                seen = len(watcher.ended_at)
                with contextlib.suppress(TimeoutError):  # none ended in time: kill anyway
                    wait_for(lambda seen=seen: len(watcher.ended_at) > seen, 60, "a pod end", 0.05)
                time.sleep(rnd.uniform(0.0, 1.5))
                where = "after a pod ended"
            else:
                time.sleep(rnd.uniform(2.0, 6.0))
                where = "at a random moment"
            if not op.alive():
                pytest.fail(f"the operator died on its own:\n{op.tail()}")
            op.kill()
            kills.append(f"{time.monotonic() - t0:.0f}s {where}")
            time.sleep(rnd.uniform(0.5, 4.0))
            op.start()

        # let them finish with the operator up
        def all_succeeded() -> bool:
            ph = phases()
            assert "Failed" not in ph.values(), (ph, op.tail())
            assert op.alive(), op.tail()
            return all(p == "Succeeded" for p in ph.values())

        with contextlib.suppress(TimeoutError):  # the assert below shows every status
            wait_for(all_succeeded, max(deadline - time.monotonic(), 0), "all Succeeded", 2)
        seconds = time.monotonic() - t0
        statuses = {n: get_import(k8s_api, namespace, n)["status"] for n in IMPORTS}
    finally:
        op.stop()
        watcher.stop()
    assert all(st["phase"] == "Succeeded" for st in statuses.values()), (
        json.dumps(statuses, indent=1),
        op.tail(),
    )
    assert len(kills) == KILLS, f"the imports finished after only {len(kills)} kills: {kills}"
    assert not watcher.violations, "\n".join(watcher.violations)
    assert set(watcher.max_live.values()) == {1}, watcher.max_live

    ref_root = tmp_path / "reference"
    for name in IMPORTS:
        st = statuses[name]
        pods = {p: c for p, c in watcher.exit_codes.items() if p.startswith(f"{name}-s")}
        exits_75 = sum(c == 75 for c in pods.values())
        assert sorted(set(pods.values())) == [0, 75], pods  # no crash, no kill of an importer
        assert sum(c == 0 for c in pods.values()) == SHARDS, pods
        assert st["restarts"]["threshold"] == exits_75, (st["restarts"], pods)
        assert st["restarts"]["total"] == exits_75, (st["restarts"], pods)
        files = len(list(sources[name].iterdir()))
        assert st["progress"] == f"{files}/{files} (100%)", st["progress"]
        assert st["counts"]["filesDone"] == st["counts"]["filesTotal"] == files
        assert st["currentPods"] == []
        for shard in st["shards"]:
            assert shard["phase"] == "Succeeded", shard
            mine = [p for p in pods if p.startswith(f"{name}-s{shard['index']}-")]
            assert shard["attempt"] == len(mine), (shard, mine)
        # the vectors: union of the shards' embedded Qdrant directories == one standalone run
        got: dict[str, object] = {}
        for i in range(SHARDS):
            got.update(lib.read_points(qdrant[name] / f"shard-{i}"))
        assert st["counts"]["points"] == len(got), (st["counts"], len(got))
        ref = lib.Workspace(ref_root / name, sources[name])
        r = ref.run("--batch-size", "8", "--threads", "1")
        assert r.returncode == 0, r.stderr
        lib.assert_same_points(got, ref.points())
    print(
        f"operator kills survived: {len(kills)} ({sum('after' in k for k in kills)} right "
        f"after a pod ended) over {seconds:.0f}s; {len(watcher.seen)} pods for "
        f"{len(IMPORTS) * SHARDS} shards, max live per shard {max(watcher.max_live.values())}; "
        f"operator starts {op.starts}; kills at {kills}"
    )
