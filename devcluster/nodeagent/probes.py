"""Readiness and liveness probes (``httpGet`` incl. named ports and HTTPS without
verification, ``tcpSocket``, and ``exec`` through ``nsenter`` into the container's mount and
cgroup namespaces); ``startupProbe`` and ``grpc`` are not emulated (treated as passing)."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devcluster import podspec
from devcluster.podspec import JSON

if TYPE_CHECKING:
    from devcluster.nodeagent.containers import ContainerRun

PROBE_KINDS = ("readinessProbe", "livenessProbe")

# (reason, message, type) -> an event on the pod
EventFn = Callable[[str, str, str], None]


@dataclass
class ProbeState:
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0


def _http_probe(hg: JSON, container: JSON, timeout: float) -> tuple[bool, str]:
    port = podspec.probe_port(hg.get("port", 80), container)
    host = hg.get("host") or "127.0.0.1"
    headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
    conn: http.client.HTTPConnection
    if str(hg.get("scheme", "HTTP")).upper() == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", hg.get("path") or "/", headers=headers)
        code = conn.getresponse().status
    finally:
        conn.close()
    return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"


def run_probe(probe: JSON, container: JSON, pid: int) -> tuple[bool, str]:
    """One probe attempt against a container (host network: 127.0.0.1)."""
    timeout = podspec.probe_timing(probe).timeout
    try:
        if "httpGet" in probe:
            return _http_probe(probe["httpGet"], container, timeout)
        if "tcpSocket" in probe:
            ts = probe["tcpSocket"]
            port = podspec.probe_port(ts.get("port", 0), container)
            with socket.create_connection((ts.get("host") or "127.0.0.1", port), timeout):
                return True, ""
        if "exec" in probe:
            # in the container's mount and cgroup namespaces (as root: an approximation)
            cmd = ["nsenter", "-t", str(pid), "-m", "-C", "--", *probe["exec"]["command"]]
            res = subprocess.run(cmd, capture_output=True, timeout=max(timeout, 1), check=False)
            out = (res.stdout + res.stderr).decode(errors="replace").strip()[-200:]
            return res.returncode == 0, f"exec probe failed ({res.returncode}): {out}"
    except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException) as e:
        return False, f"probe failed: {e}"
    return True, ""  # grpc and unknown handlers: not emulated, treated as success


def check_probes(r: ContainerRun, grace: float, event: EventFn) -> bool:
    """Run ``r``'s due probes; True if its readiness changed. A failed liveness probe sends
    SIGTERM, and SIGKILL once ``grace`` seconds have passed."""
    now = time.monotonic()
    if r.kill_deadline is not None:
        if now >= r.kill_deadline:
            r.signal(signal.SIGKILL)
        return False
    changed = False
    for kind, st in r.probes.items():
        probe = r.spec[kind]
        t = podspec.probe_timing(probe)
        if now < r.started_mono + t.initial_delay or now < st.next_at or r.proc is None:
            continue
        st.next_at = now + t.period
        ok, msg = run_probe(probe, r.spec, r.proc.pid)
        st.successes, st.failures = (st.successes + 1, 0) if ok else (0, st.failures + 1)
        what = "Readiness" if kind == "readinessProbe" else "Liveness"
        if not ok:
            event("Unhealthy", f"{what} probe failed: {msg}", "Warning")
        if kind == "readinessProbe":
            if ok and not r.ready and st.successes >= t.success_threshold:
                r.ready, changed = True, True
            elif not ok and r.ready and st.failures >= t.failure_threshold:
                r.ready, changed = False, True
        elif not ok and st.failures >= t.failure_threshold:
            event("Killing", f"Container {r.name} failed liveness probe, will be restarted",
                  "Normal")  # fmt: skip
            r.kill_deadline = now + grace
            r.signal(signal.SIGTERM)
    return changed
