"""The node agent: plays the kubelet for one Node of the dev cluster.

* registers a Ready Node (no taints), renews its Lease and refreshes its status
  (:mod:`.registration`);
* lists and watches the pods bound to the node and runs one worker per pod
  (:mod:`.podsync`, :mod:`.worker`): init containers, then containers, restarts per
  restartPolicy, probes (:mod:`.probes`), deletion (SIGTERM, grace period, SIGKILL, then
  removes the pod), status through the status subresource;
* runs each container as a local process (:mod:`.containers`, then
  :mod:`devcluster.launcher`): image -> local entry point (:class:`podspec.ImageMap`), env,
  volumes (:mod:`.volumes`) bind-mounted at their mountPath in a private mount namespace, the
  service-account token at /var/run/secrets/kubernetes.io/serviceaccount,
  runAsUser/runAsGroup;
* enforces ``limits.memory`` with a real memory cgroup per container (v1 or v2), and
  reports ``OOMKilled`` when the cgroup recorded an OOM kill; without writable cgroups it
  polls RSS and kills over-limit processes (reported the same way);
* provisions PersistentVolumes for PVCs of the ``standard`` StorageClass (hostPath
  directories under ``$EIO_CACHE/volumes``; :mod:`.provisioner`);
* serves ``kubectl logs`` on its HTTPS port (``/containerLogs/...``; :mod:`.logs`).

What the parts ask of the API server goes through :class:`.api.NodeApi`; :mod:`.agent` wires
them together. Run by ``devcluster up`` (``python -m devcluster.nodeagent``) or
``devcluster agent`` in the foreground.
"""
