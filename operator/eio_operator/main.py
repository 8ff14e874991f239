"""``embedding-import-operator``: run the kopf operator (settings from EIO_* env, see settings.py).

Logs in once, through the project's one config loader (``eio_common.kubeapi.api_client``:
in-cluster service account, else the kubeconfig), for both kopf's watches (a login handler in
place of kopf's own loader) and the operator's API calls (``RestKube``); watches
EIO_WATCH_NAMESPACE (empty: all namespaces), serves kopf's liveness probe on
EIO_LIVENESS_PORT (/healthz) and Prometheus metrics on EIO_METRICS_PORT.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import kopf
import prometheus_client

from eio_common import kubeapi
from eio_operator.handlers import register
from eio_operator.kube import RestKube
from eio_operator.reconcile import Context
from eio_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="embedding-import-operator",
        description="Kubernetes operator for EmbeddingImports (eio.dev/v1alpha1). "
        "Configured through EIO_* environment variables (docs/operations.md).",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    settings = OperatorSettings()
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    api = kubeapi.api_client()
    kopf.on.login(registry=registry, id="kubeapi")(login)
    kube = RestKube(api)
    ctx = Context(settings=settings, kube=kube, events=kube.post_event)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    namespaces = [settings.watch_namespace] if settings.watch_namespace else []
    liveness = (
        f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    )
    log.info(
        "starting: namespace=%s metrics=:%s liveness=%s",
        settings.watch_namespace or "(all)",
        settings.metrics_port,
        liveness,
    )
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        memo=kopf.Memo(eio=ctx),
    )
    return 0


def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's login handler (also when kopf logs in again, e.g. on a 401 after a token
    rotation): the project's config loader, read afresh."""
    return connection_info(kubeapi.api_client())


def connection_info(api: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from a ``kubernetes`` ApiClient (what kopf's own ``login_via_client``
    reads from the process-wide default configuration, here from the client given)."""
    conf = api.configuration
    header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        username=conf.username or None,
        password=conf.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
    )


if __name__ == "__main__":
    sys.exit(main())
