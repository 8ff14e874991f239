"""The project's one Kubernetes config loader and its list of retryable API errors, with a
real kubeconfig file and real exception objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import urllib3
import yaml
from eio_operator.main import connection_info
from kubernetes.client.exceptions import ApiException

from eio_common import kubeapi


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_an_explicit_kubeconfig_is_used(tmp_path: Path) -> None:
    cfg = _kubeconfig(tmp_path / "a", "https://a.example:6443", "tok-a")
    api = kubeapi.api_client(str(cfg))
    assert api.configuration.host == "https://a.example:6443"


def test_kubeconfig_env_is_read_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a cluster
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "b", "https://b.example", "t")))
    assert kubeapi.api_client().configuration.host == "https://b.example"
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "c", "https://c.example", "t")))
    assert kubeapi.api_client().configuration.host == "https://c.example"


def test_kopf_logs_in_with_the_same_credentials(tmp_path: Path) -> None:
    api = kubeapi.api_client(str(_kubeconfig(tmp_path / "k", "https://k.example", "sekret")))
    info = connection_info(api)
    assert (info.server, info.scheme, info.token) == ("https://k.example", "Bearer", "sekret")
    assert info.insecure is True


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ApiException(status=503), True),
        (ApiException(status=500), True),
        (ApiException(status=429), True),
        (ApiException(status=None), True),  # no answer at all
        (urllib3.exceptions.ProtocolError("connection reset"), True),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), True),  # type: ignore[arg-type]
        (ConnectionRefusedError(), True),
        (ApiException(status=404), False),
        (ApiException(status=409), False),
        (ApiException(status=403), False),
        (ApiException(status=422), False),
        (ApiException(status=501), False),
        (ValueError("a bug"), False),
    ],
)
def test_transient_is_an_explicit_list(error: Exception, retry: bool) -> None:
    assert kubeapi.transient(error) is retry
