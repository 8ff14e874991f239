"""The one way this project connects to a Kubernetes API server, and which of its errors are
worth another try.

Used by the importer (ConfigMap checkpoints), the operator (``RestKube``), the dev cluster's
node agent and the benchmarks. It lives in the importer package because the importer image
must not depend on the operator or on devcluster; the others import it from here.
"""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client, config


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ``ApiClient`` for ``kubeconfig`` if given; else the in-cluster service account; else
    ``$KUBECONFIG`` (read now, not when the kubernetes package was imported) or
    ``~/.kube/config``. Raises ``config.ConfigException`` when none is usable."""
    if kubeconfig is None:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration)
        except config.ConfigException:
            kubeconfig = os.environ.get("KUBECONFIG") or None
    # new_client_from_config does not touch the process-wide default configuration
    api: Any = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    assert isinstance(api, client.ApiClient)
    return api


# HTTP statuses that mean "the server is restarting or overloaded": worth the same call again.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def transient(e: BaseException) -> bool:
    """Is ``e`` (raised by a ``kubernetes`` client call) worth retrying as is?

    Explicit list: no HTTP answer (connection refused or reset, timeout: urllib3's
    ``HTTPError`` or an ``OSError``), or an ``ApiException`` with a status in
    ``RETRYABLE_STATUSES`` (or without a status: the request never got an answer). Anything
    else (403 forbidden, 404, 409 conflict, 422 invalid) is an answer, not an outage."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(e, ApiException):
        return e.status is None or e.status in RETRYABLE_STATUSES
    return isinstance(e, HTTPError | OSError)
