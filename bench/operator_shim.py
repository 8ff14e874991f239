"""Start the real operator (``eio_operator.main:main``) for the cluster benchmarks.

Work-around, only while needed: the operator registers its handlers in its own
``kopf.OperatorRegistry``, and kopf's default login handlers live only in kopf's default
registry, so such an operator finds no credentials. If the operator's registry has no login
handler after registration, this adds kopf's ``login_via_client`` (kubeconfig / in-cluster
config through the ``kubernetes`` client); otherwise it changes nothing.
"""

from __future__ import annotations

import sys

import eio_operator.main as op_main
import kopf
from kopf._core.intents import causes

_register = op_main.register


def register(registry: kopf.OperatorRegistry, settings: object) -> None:
    _register(registry, settings)  # type: ignore[arg-type]
    if not registry._activities.get_handlers(activity=causes.Activity.AUTHENTICATION):
        kopf.on.login(registry=registry)(kopf.login_via_client)


op_main.register = register  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(op_main.main(sys.argv[1:]))
