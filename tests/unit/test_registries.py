"""Registry addresses from the machine's own configuration (devcluster.registries): apt sources
in both formats, Go's GOPROXY through the real ``go env``, pip's settings through real pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster import registries
from devcluster.registries import AptSource, apt_sources, debian_mirror, go_proxy, pip_index

ONE_LINE = """\
# the main archive, through a local mirror
deb [ arch=amd64 signed-by=/usr/share/keyrings/debian.gpg ] http://mirror.lan/debian/ bookworm main
deb-src http://mirror.lan/debian bookworm main
  deb http://mirror.lan/debian-security bookworm-security main # trailing comment
#deb http://commented.out/debian bookworm main
"""

DEB822 = """\
Types: deb deb-src
URIs: https://apt.corp/debian https://apt2.corp/debian
Suites: trixie trixie-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBFxyz
 -----END PGP PUBLIC KEY BLOCK-----

# switched off: apt skips it
Types: deb
URIs: http://off.corp/debian
Suites: bookworm
Enabled: no

Types: deb
URIs: mirror+file:///etc/apt/mirrors/debian.list
Suites: bookworm
"""


def write(etc: Path, name: str, text: str) -> None:
    path = etc / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_both_formats_in_apts_order(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/b.sources", DEB822)
    write(tmp_path, "sources.list.d/a.list", "deb http://third.party/repo stable main\n")
    write(tmp_path, "sources.list.d/c.list.disabled", "deb http://ignored/debian bookworm main\n")
    write(tmp_path, "sources.list", ONE_LINE)
    assert apt_sources(tmp_path) == [
        AptSource("http://mirror.lan/debian/", ("bookworm",)),
        AptSource("http://mirror.lan/debian-security", ("bookworm-security",)),
        AptSource("http://third.party/repo", ("stable",)),
        AptSource("https://apt.corp/debian", ("trixie", "trixie-updates")),
        AptSource("https://apt2.corp/debian", ("trixie", "trixie-updates")),
        AptSource("mirror+file:///etc/apt/mirrors/debian.list", ("bookworm",)),
    ]


@pytest.mark.parametrize(
    ("files", "suite", "mirror"),
    [
        pytest.param(
            {"sources.list": ONE_LINE}, "bookworm", "http://mirror.lan/debian", id="suite"
        ),
        # A trixie machine building a bookworm base: its Debian archive all the same.
        pytest.param(
            {"sources.list.d/d.sources": DEB822},
            "bookworm",
            "https://apt.corp/debian",
            id="other-suite-same-archive",
        ),
        pytest.param(
            {"sources.list.d/d.sources": DEB822}, "trixie", "https://apt.corp/debian", id="deb822"
        ),
        pytest.param(
            {"sources.list.d/x.list": "deb http://third.party/repo stable main\n"},
            "bookworm",
            registries.DEBIAN_FALLBACK,
            id="no-debian-archive",
        ),
        pytest.param({}, "bookworm", registries.DEBIAN_FALLBACK, id="no-sources"),
    ],
)
def test_debian_mirror(tmp_path: Path, files: dict[str, str], suite: str, mirror: str) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    assert debian_mirror(suite, tmp_path) == mirror


def go_binary() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(found, os.X_OK):
        pytest.skip("no Go toolchain")
    return found


def test_go_proxy_from_the_variable_then_gos_own_config(tmp_path: Path) -> None:
    go = go_binary()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GOENV": str(tmp_path / "go.env")}
    assert go_proxy(go, {**env, "GOPROXY": "https://var.example"}) == "https://var.example"
    # `go env -w` writes the user's go env file; go_proxy reads it through `go env`.
    subprocess.run([go, "env", "-w", "GOPROXY=https://goenv.example,direct"], env=env, check=True)
    assert go_proxy(go, env) == "https://goenv.example,direct"


def test_go_proxy_without_go_is_the_public_default(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-go")
    assert go_proxy(missing, {"PATH": ""}) == registries.GOPROXY_FALLBACK


def test_pip_index_precedence_of_sections() -> None:
    listing = """\
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.index-url='https://global.example/simple'
install.index-url='https://install.example/simple'
global.trusted-host='global.example'
:env:.find-links='/opt/wheels'
:env:.extra-index-url="https://extra.example/it's"
"""
    assert pip_index(listing) == {
        "PIP_EXTRA_INDEX_URL": "https://extra.example/it's",
        "PIP_INDEX_URL": "https://install.example/simple",
        "PIP_TRUSTED_HOST": "global.example",
    }
    assert pip_index("global.cert='/x'\n:env:.index-url=''\n") == {}


def test_pip_index_asks_the_real_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    assert pip_index()["PIP_INDEX_URL"] == "https://env.example/simple"


def test_command_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GOPROXY": "https://cli.example",
        "PYTHONPATH": str(Path(registries.__file__).parents[1]),
    }
    cmd = [sys.executable, "-m", "devcluster.registries"]
    out = subprocess.run([*cmd, "go-proxy"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == "https://cli.example\n"
    bad = subprocess.run([*cmd, "nonsense"], env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
