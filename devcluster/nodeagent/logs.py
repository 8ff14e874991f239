"""Container logs: where they are written
(``$EIO_CACHE/run/logs/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log``), the
termination message read from them, and the kubelet-like HTTPS endpoint the API server calls
for ``kubectl logs [-f] [--previous] [--tail N]`` (``/containerLogs/<ns>/<pod>/<container>``,
client certificates verified against the cluster CA; ``/healthz``)."""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

log = logging.getLogger("nodeagent")

FOLLOW_POLL_SECONDS = 0.3


def pod_log_dir(logs_root: Path, ns: str, name: str, uid: str) -> Path:
    return logs_root / "pods" / f"{ns}_{name}_{uid}"


def container_log(pod_logs: Path, container: str, restart_count: int) -> Path:
    return pod_logs / container / f"{restart_count}.log"


def log_tail(path: Path, max_lines: int = 80, max_bytes: int = 2048) -> str | None:
    """The kubelet's FallbackToLogsOnError message: the log's last 80 lines or 2 KiB."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError:
        return None
    lines = data.decode(errors="replace").splitlines()[-max_lines:]
    return "\n".join(lines).strip() or None


def last_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


class LivePod(Protocol):
    """A pod the agent runs now: its log directory, and whether a container still writes."""

    @property
    def log_dir(self) -> Path: ...

    def container_running(self, name: str) -> bool: ...


class LogServer:
    """``find(ns, pod)`` names the live pod of that name, if any; a deleted pod's logs are
    found by directory name (the newest)."""

    def __init__(
        self,
        port: int,
        pki: Path,
        logs_root: Path,
        find: Callable[[str, str], LivePod | None],
        stop: threading.Event,
    ) -> None:
        self.logs_root = logs_root
        self.find = find
        self.stop = stop
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki / "kubelet.crt"), str(pki / "kubelet.key"))
        ctx.load_verify_locations(str(pki / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def shutdown(self) -> None:
        self.server.shutdown()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        logs = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

            def do_GET(self) -> None:
                u = urlparse(self.path)
                parts = u.path.strip("/").split("/")
                if parts == ["healthz"]:
                    _reply(self, 200, b"ok")
                elif len(parts) != 4 or parts[0] != "containerLogs":
                    _reply(self, 404, b"not found")
                else:
                    logs.serve(self, parts[1], parts[2], parts[3], parse_qs(u.query))

        return Handler

    def _files(self, live: LivePod | None, ns: str, pod: str, container: str) -> list[Path]:
        """The container's log files, oldest start first."""
        if live is not None:
            logdir: Path | None = live.log_dir
        else:
            cands = sorted(self.logs_root.joinpath("pods").glob(f"{ns}_{pod}_*"),
                           key=lambda p: p.stat().st_mtime)  # fmt: skip
            logdir = cands[-1] if cands else None
        return sorted(
            (logdir / container).glob("*.log") if logdir else [],
            key=lambda p: int(p.stem) if p.stem.isdigit() else -1,
        )

    def serve(
        self, h: BaseHTTPRequestHandler, ns: str, pod: str, container: str,
        q: dict[str, list[str]],
    ) -> None:  # fmt: skip
        live = self.find(ns, pod)
        files = self._files(live, ns, pod, container)
        if q.get("previous", ["false"])[0] == "true":
            files = files[:-1]
        if not files:
            _reply(h, 404, f"no logs for container {container} of pod {ns}/{pod}".encode())
            return
        f = files[-1]
        data = f.read_bytes()
        tail = q.get("tailLines")
        if tail:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail[0]) :]) if int(tail[0]) > 0 else b""
        follow = q.get("follow", ["false"])[0] == "true"
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        if not follow:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        if follow:
            self._follow(h, f, lambda: live is not None and live.container_running(container))

    def _follow(self, h: BaseHTTPRequestHandler, f: Path, running: Callable[[], bool]) -> None:
        """Stream what the container writes after the first answer, until it stops."""
        pos = f.stat().st_size
        with contextlib.suppress(OSError), f.open("rb") as fh:
            fh.seek(pos)
            while not self.stop.is_set():
                chunk = fh.read(65536)
                if chunk:
                    h.wfile.write(chunk)
                    h.wfile.flush()
                    continue
                if not running():
                    break
                time.sleep(FOLLOW_POLL_SECONDS)  # paces the poll of a growing file


def _reply(h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    h.send_response(code)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)
