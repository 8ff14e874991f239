"""Helpers for tests against the dev cluster (used by tests/e2e/conftest.py and tests)."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from devcluster.config import paths

T = TypeVar("T")


def wait_for(
    fn: Callable[[], T | None],
    timeout: float = 60,
    what: str = "",
    interval: float = 0.5,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Call ``fn`` until it returns something truthy; return it, or raise TimeoutError (with
    ``diagnose()`` appended: an operator log tail, the last status).

    The one wait helper of the tests and the benchmarks: they wait for an observable fact (a
    status field, a log line, a listening port), never for a fixed time. The sleep below only
    paces the polling.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f"\n{diagnose()}" if diagnose is not None else ""
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what or fn}; last={last!r}{detail}"
    )


def with_paths(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted-path overrides: ``{"a.b": 1}`` sets ``out["a"]["b"]``
    (creating the parents), a value of None removes the key. The one spec patcher of the tests.
    """
    out = copy.deepcopy(base)
    for dotted, value in patch.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    """Run the dev cluster's kubectl; its stdout. ``check``: a failure is an AssertionError
    with kubectl's own words."""
    out = subprocess.run(
        [str(paths().bin / "kubectl"), *args],
        input=input, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}{out.stdout}")
    return out.stdout


def unless_missing(read: Callable[[], T]) -> T | None:
    """``read()``, or None when the API answers 404 (the object does not exist (yet))."""
    try:
        return read()
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def pod_phase(api: Any, ns: str, name: str) -> str | None:
    return unless_missing(lambda: str(api.read_namespaced_pod(name, ns).status.phase))


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    """The real operator as a local subprocess watching ONE namespace (``EIO_WATCH_NAMESPACE``).

    Tests share one cluster, so never all namespaces. ``start``/``kill``/``stop`` as often as a
    test needs; the log of every start goes to ``log_path``. With ``wait_ready`` a start returns
    once kopf's liveness endpoint answers.
    """

    namespace: str
    log_path: Path
    resync_seconds: float = 2
    wait_ready: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert not self.alive(), "already running"
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(paths().kubeconfig),
            EIO_WATCH_NAMESPACE=self.namespace,
            EIO_METRICS_PORT=str(self.metrics_port),
            EIO_LIVENESS_PORT=str(self.liveness_port),
            EIO_RESYNC_INTERVAL_SECONDS=str(self.resync_seconds),
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        self.starts += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n===== operator start #{self.starts} at {time.strftime('%H:%M:%S')}\n"
                      .encode())  # fmt: skip
            out.flush()
            self.proc = subprocess.Popen(
                [str(Path(sys.prefix) / "bin" / "embedding-import-operator")],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        if self.wait_ready:
            wait_for(self._listening, 90, what="the operator's liveness port")

    def _listening(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise AssertionError(f"operator exited with {code}:\n{self.tail()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.liveness_port)) == 0

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no last status write, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 80) -> str:
        return "".join(self.log().splitlines(True)[-lines:])

    log_tail = tail
