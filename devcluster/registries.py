"""Package registry addresses from this machine's own configuration.

The builds (``devcluster build``, ``hack/build-images.sh``) fetch from the same places the
machine's own tools do, so a user's mirror or proxy is used without telling the project:

* the Debian archive (debootstrap of the image base): apt's sources, ``/etc/apt/sources.list``
  and ``sources.list.d/*.list`` (one-line format) and ``*.sources`` (deb822);
* the Go module proxy: ``$GOPROXY``, else ``go env GOPROXY`` (which reads ``go env -w``);
* pip's index inside the image build: pip's own configuration (``pip config list``: its
  files and ``PIP_*`` variables), nothing when pip uses its default index.

Each falls back to the public default only where the machine says nothing.
``python -m devcluster.registries debian-mirror SUITE | go-proxy [GO] | pip-index`` prints
them (``hack/lib.sh`` wraps that for the shell scripts).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APT_ETC = Path("/etc/apt")
DEBIAN_FALLBACK = "http://deb.debian.org/debian"
GOPROXY_FALLBACK = "https://proxy.golang.org,direct"
# What debootstrap can fetch from (not apt's mirror+file:, tor+http:, cdrom:).
_FETCHABLE = ("http://", "https://", "file:/")
# pip setting -> the variable that sets it inside the image build (a build argument).
PIP_SETTINGS = {
    "index-url": "PIP_INDEX_URL",
    "extra-index-url": "PIP_EXTRA_INDEX_URL",
    "trusted-host": "PIP_TRUSTED_HOST",
}
_PIP_SECTIONS = {"global": 0, "install": 1, ":env:": 2}  # later overrides earlier


@dataclass(frozen=True)
class AptSource:
    """One enabled ``deb`` entry: an archive URI and the suites apt takes from it."""

    uri: str
    suites: tuple[str, ...]


def apt_sources(etc: Path = APT_ETC) -> list[AptSource]:
    """The enabled ``deb`` entries in apt's order: sources.list, then sources.list.d by name
    (apt reads only ``*.list`` and ``*.sources`` there)."""
    listd = etc / "sources.list.d"
    files = [etc / "sources.list"]
    if listd.is_dir():
        files += sorted(f for f in listd.iterdir() if f.suffix in (".list", ".sources"))
    out: list[AptSource] = []
    for f in files:
        if f.is_file():
            text = f.read_text(errors="replace")
            out += _deb822(text) if f.suffix == ".sources" else _one_line(text)
    return out


def _one_line(text: str) -> list[AptSource]:
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s*)?(\S+)\s+(\S+)", line)
        if m:
            out.append(AptSource(m.group(1), (m.group(2),)))
    return out


def _deb822(text: str) -> list[AptSource]:
    out = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(("#", " ", "\t")):
                fields[key.strip().lower()] = value.strip()
        enabled = fields.get("enabled", "yes").lower() != "no"
        if enabled and "deb" in fields.get("types", "").split():
            suites = tuple(fields.get("suites", "").split())
            out += [AptSource(uri, suites) for uri in fields.get("uris", "").split()]
    return out


def debian_mirror(suite: str, etc: Path = APT_ETC) -> str:
    """The Debian archive apt takes ``suite`` from; else the first apt source that is a Debian
    archive (its URI ends in ``/debian``); else deb.debian.org."""
    sources = [s for s in apt_sources(etc) if s.uri.startswith(_FETCHABLE)]
    for s in sources:
        if suite in s.suites:
            return s.uri.rstrip("/")
    for s in sources:
        if s.uri.rstrip("/").endswith("/debian"):
            return s.uri.rstrip("/")
    return DEBIAN_FALLBACK


def go_proxy(go: str = "go", env: Mapping[str, str] | None = None) -> str:
    """GOPROXY as this machine's Go sees it: the variable, else ``go env GOPROXY``."""
    env = dict(os.environ if env is None else env)
    if env.get("GOPROXY"):
        return env["GOPROXY"]
    try:
        run = subprocess.run(
            [go, "env", "GOPROXY"], env=env, capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return GOPROXY_FALLBACK
    return run.stdout.strip() or GOPROXY_FALLBACK


def pip_index(listing: str | None = None) -> dict[str, str]:
    """pip's index settings as ``PIP_*`` variables, from ``pip config list`` (or ``listing``,
    its output); empty when pip uses its default index."""
    if listing is None:
        cmd = [sys.executable, "-m", "pip", "config", "list"]
        listing = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    best: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        m = re.fullmatch(r"(global|install|:env:)\.([\w-]+)=(['\"])(.*)\3", line.strip())
        if m and m.group(2) in PIP_SETTINGS and m.group(4):
            rank = _PIP_SECTIONS[m.group(1)]
            if rank >= best.get(m.group(2), (-1, ""))[0]:
                best[m.group(2)] = (rank, m.group(4))
    return {PIP_SETTINGS[k]: v for k, (_, v) in sorted(best.items())}


def main(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    if what == "debian-mirror" and len(argv) == 2:
        print(debian_mirror(argv[1]))
    elif what == "go-proxy" and len(argv) <= 2:
        print(go_proxy(argv[1] if len(argv) == 2 else "go"))
    elif what == "pip-index" and len(argv) == 1:
        for key, value in pip_index().items():
            print(f"{key}={value}")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
