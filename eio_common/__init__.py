"""What the operator, the importer and the dev cluster share, and nothing else.

- ``contract``: exit codes, names, the checkpoint and the per-file state (pydantic only);
- ``kubeapi``: the one Kubernetes config loader and the list of retryable API errors;
- ``retry``: the one retry loop (standard library only);
- ``quantity``: the one grammar for memory and CPU quantities (Kubernetes' own);
- ``cgroup``: the one reader of ``/proc/<pid>/cgroup`` and the cgroup mounts.

This package imports none of ``importer``, ``eio_operator`` or ``devcluster``
(``tests/operator/test_operator_imports.py`` enforces the boundaries).
"""
