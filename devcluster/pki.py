"""A self-made CA and the certificates of the dev cluster (with the openssl CLI).

Generated once into ``$EIO_CACHE/run/pki`` and reused; deleting the directory (or
``devcluster down --purge``) makes the next ``up`` create fresh ones.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devcluster.config import CLUSTER_DOMAIN, NODE_IP, NODE_NAME, SERVICE_IP

DAYS = "3650"


@dataclass(frozen=True)
class Leaf:
    name: str  # file stem: <name>.crt / <name>.key
    subject: str  # openssl -subj, e.g. /O=system:masters/CN=admin
    sans: tuple[str, ...] = ()  # subjectAltName entries, e.g. ("IP:127.0.0.1", "DNS:localhost")
    usage: str = "serverAuth,clientAuth"


API_SANS = (
    "IP:127.0.0.1",
    f"IP:{SERVICE_IP}",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}",
)

# The admin and every control-plane client are in system:masters: this is a throw-away dev
# cluster, and it keeps bootstrap RBAC out of the way of the components. RBAC stays on for
# everything else (service accounts, the operator under test).
LEAVES = (
    Leaf("apiserver", "/CN=kube-apiserver", API_SANS, "serverAuth"),
    Leaf("admin", "/O=system:masters/CN=eio-admin", (), "clientAuth"),
    Leaf("scheduler", "/O=system:masters/CN=system:kube-scheduler", (), "clientAuth"),
    Leaf(
        "controller-manager",
        "/O=system:masters/CN=system:kube-controller-manager",
        (),
        "clientAuth",
    ),
    Leaf("node", f"/O=system:masters/CN=system:node:{NODE_NAME}", (), "clientAuth"),
    Leaf("kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", (), "clientAuth"),
    Leaf(
        "kubelet",
        f"/CN=system:node:{NODE_NAME}",
        ("IP:127.0.0.1", "DNS:localhost", f"DNS:{NODE_NAME}"),
        "serverAuth",
    ),
    # The real kubelet's serving certificate (kubelet tier): the apiserver reaches it at the
    # node's InternalIP for logs and exec.
    Leaf(
        "kubelet-serving",
        f"/CN=system:node:{NODE_NAME}",
        (f"IP:{NODE_IP}", "IP:127.0.0.1", f"DNS:{NODE_NAME}"),
        "serverAuth",
    ),
)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_pki(pki: Path) -> None:
    """Create the CA, leaf certificates and the service-account key pair if missing."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    fresh_ca = False
    if not (ca_key.exists() and ca_crt.exists()):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", DAYS,
            "-keyout", str(ca_key), "-out", str(ca_crt), "-subj", "/CN=eio-devcluster-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        fresh_ca = True
    for leaf in LEAVES:
        key, crt = pki / f"{leaf.name}.key", pki / f"{leaf.name}.crt"
        if not fresh_ca and key.exists() and crt.exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
            lines = [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                f"extendedKeyUsage={leaf.usage}",
            ]
            if leaf.sans:
                lines.append("subjectAltName=" + ",".join(leaf.sans))
            ext.write_text("\n".join(lines) + "\n")
            _openssl(
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
                "-keyout", str(key), "-out", str(csr), "-subj", leaf.subject,
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                "-CAcreateserial", "-sha256", "-days", DAYS, "-extfile", str(ext),
                "-out", str(crt),
            )  # fmt: skip
    sa_key, sa_pub = pki / "sa.key", pki / "sa.pub"
    if fresh_ca or not (sa_key.exists() and sa_pub.exists()):
        _openssl("genrsa", "-out", str(sa_key), "2048")
        _openssl("rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    for f in pki.iterdir():
        if f.suffix == ".key":
            f.chmod(0o600)


def kubeconfig_text(server: str, pki: Path, user: str) -> str:
    """A kubeconfig for ``server`` with client cert ``<user>.crt`` (paths, not embedded)."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: devcluster
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {user}
  user:
    client-certificate: {pki / f"{user}.crt"}
    client-key: {pki / f"{user}.key"}
contexts:
- name: devcluster
  context:
    cluster: devcluster
    user: {user}
    namespace: default
current-context: devcluster
"""
