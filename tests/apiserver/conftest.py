"""A real kube-apiserver + kube-controller-manager 1.20 with etcd, on loopback, for the slow tier.

Built once by tests/k8s/build-control-plane.sh (cached under ~/.cache/k8s-control-plane) and started
per session by tests/k8s/start-control-plane.sh. Run with `make test-apiserver` (`.ci/run` does).
Tokens: `admin-token` (system:masters) and `user-token` (user `tester`, no rights until bound).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from manager.backends.kubernetes import kube_api_client
from tests.helpers import bindable

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "k8s"


@dataclass(frozen=True)
class ControlPlane:
    url: str
    kubeconfig: Path
    kubectl: str
    helm: str

    def client(self, token: str) -> ApiClient:
        cfg = Configuration(host=self.url, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"})
        cfg.verify_ssl = False
        return kube_api_client(cfg)  # as the manager's: closing it closes every TLS socket

    def kubectl_run(self, *args: str, token: str = "admin-token", stdin: str | None = None,
                    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl, "--kubeconfig", str(self.kubeconfig), "--token", token, *args],
            input=stdin, capture_output=True, text=True, timeout=120,
        )



def control_plane_port() -> int:
    """The apiserver's port: free, with etcd's (port + 7000, peer + 7001) free too, all below Linux's ephemeral
    range (32768 on), where any outgoing connection may hold one. Only the apiserver's used to be checked: a run's
    etcd failed on `bind: address already in use` for its peer port, 43884."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32768 - 7001)
        if all(bindable(p) for p in (port, port + 7000, port + 7001)):
            return port
    raise RuntimeError("no free port for the control plane (and etcd's, at +7000 and +7001) in 20000-32767")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = subprocess.run(["bash", str(SCRIPTS / "build-control-plane.sh")], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
    tools = subprocess.run(["bash", str(SCRIPTS / "get-helm.sh")], capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
    port = int(os.environ.get("APISERVER_PORT") or control_plane_port())
    run_dir = tmp_path_factory.mktemp("control-plane")
    started = subprocess.run(["bash", str(SCRIPTS / "start-control-plane.sh"), bin_dir, str(run_dir), str(port)],
                             capture_output=True, text=True, timeout=180)
    pids = [int(p) for p in (run_dir / "pids").read_text().split()] if (run_dir / "pids").exists() else []
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield ControlPlane(f"https://127.0.0.1:{port}", Path(started.stdout.strip().splitlines()[-1]),
                           f"{tools}/kubectl", f"{tools}/helm")
    finally:
        for pid in reversed(pids):  # the apiserver lingers if etcd goes first
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture
async def admin(control_plane: ControlPlane) -> AsyncIterator[ApiClient]:
    api = control_plane.client("admin-token")
    yield api
    await api.close()
