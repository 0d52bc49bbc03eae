"""What makes the API fast stays correct: an API process reuses the current registry version for
JOBQUEUE_API_CACHE_SECONDS, yet an apply through it is seen by the very next submission and an apply elsewhere
within that time; `jobqueue api` with JOBQUEUE_API_WORKERS=N serves the same API from N processes; a process that
serves only the API settles its heap once started (no full collection walks it again), one that shares its process
does not."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time

import httpx
import psutil
import pyarrow as pa
import pytest
import yaml

from jobqueue.api.app import create_app
from jobqueue.api.server import api_in_thread, worker_count
from jobqueue.auth.identity import Role
from jobqueue.engine.resources import container_cpus
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.registry import load_registry, parse_registry
from jobqueue.registry_store import RegistryStore
from jobqueue.registry_versions import document_of
from jobqueue.sample import sample_input
from tests.api_support import ARROW, arrow_body, bearer, make_token
from tests.helpers import eventually, free_port


def _variant(document: dict, n: int) -> dict:
    """The same registry with one more feature (`<first>_copy<n>`): another version, the same outputs valid."""
    changed = yaml.safe_load(yaml.safe_dump(document))
    features = next(iter(changed["namespaces"].values()))["sources"][0]["features"]
    name = next(iter(features))
    features[f"{name}_copy{n}"] = features[name]
    return changed


def _input() -> bytes:
    data, _ = sample_input(50, 10, seed=1)
    return arrow_body(pa.table(data))


async def _pinned(http: httpx.AsyncClient, user: dict[str, str]) -> str:
    r = await http.post("/v1/jobs", params={"output": "user.f0", "resource_group": "default"}, content=_input(),
                        headers={**user, **ARROW})
    assert r.status_code == 201, r.text
    return str(r.json()["registry_version"])


async def test_an_apply_is_seen_at_once_through_this_api_and_within_the_cache_time_elsewhere(settings):
    document = document_of(load_registry(settings.registry_path))
    redis = connect_redis(settings)
    store = RegistryStore(redis, Keys.for_environment(settings.environment))
    first = await store.apply(parse_registry(document, settings.registry_path.parent, "v1"))
    admin = bearer(await make_token(settings, "adam", Role.ADMIN, "platform"))
    user = bearer(await make_token(settings, "alice", Role.USER, "risk"))
    served = settings.model_copy(update={"registry_path": None, "api_cache_seconds": 0.5})
    try:
        with api_in_thread(served, port=0) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                assert await _pinned(http, user) == first.version.id
                # another process (another replica, the CLI) applies: seen once the cached id is 0.5 s old
                second = await store.apply(parse_registry(_variant(document, 2), settings.registry_path.parent,
                                                          "v2"))
                await eventually(lambda: _seen(http, user, second.version.id), timeout=10,
                                 what="a submission planned on the version applied elsewhere")
        slow = served.model_copy(update={"api_cache_seconds": 60.0})
        with api_in_thread(slow, port=0) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                assert await _pinned(http, user) == second.version.id  # cached for a minute from here on
                applied = await http.post("/v1/registry", headers=admin, json=_variant(document, 3))
                assert applied.status_code == 200 and applied.json()["created"], applied.text
                third = applied.json()["version"]["version"]
                assert await _pinned(http, user) == third  # an apply through this process: at once
                assert (await http.get("/v1/registry", headers=user)).json()["version"] == third
    finally:
        await redis.aclose()


async def _seen(http: httpx.AsyncClient, user: dict[str, str], version: str) -> bool:
    return await _pinned(http, user) == version


@pytest.mark.parametrize("configured", ["2", None], ids=["workers-2", "default-one-per-core"])
def test_api_workers_serve_the_same_api_from_n_processes(settings, tmp_path, configured):
    expected = int(configured) if configured else worker_count(None, container_cpus()[0])
    if expected < 2:
        pytest.skip("this machine gives `jobqueue api` one core: its default is one process")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=settings.redis_url or "", JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_HOME=str(tmp_path / "home"), JOBQUEUE_REGISTRY_PATH=str(settings.registry_path),
               JOBQUEUE_API_PORT=str(port), JOBQUEUE_LOG_FORMAT="json")
    if configured:
        env["JOBQUEUE_API_WORKERS"] = configured
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "api"], env=env, cwd=tmp_path,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while True:
            assert api.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the API workers did not start"
            workers = [p for p in psutil.Process(api.pid).children() if _listens(p, port)]
            try:
                if len(workers) == expected and httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert len({w.pid for w in workers}) == expected
        token = asyncio.run(make_token(settings, "alice", Role.USER, "risk"))
        for _ in range(8):  # each on a new connection: whichever worker accepts it answers the same
            r = httpx.post(f"{url}/v1/jobs", params={"output": "user.f0"}, content=_input(),
                           headers={**bearer(token), **ARROW}, timeout=30)
            assert r.status_code == 201, r.text
            got = httpx.get(f"{url}/v1/jobs/{r.json()['job_id']}", headers=bearer(token), timeout=30)
            assert got.status_code == 200 and got.json()["owner"] == "alice"
    finally:
        api.terminate()
        try:
            api.wait(30)
        finally:
            if api.poll() is None:
                api.kill()
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _listens(process: psutil.Process, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections())
    except psutil.Error:
        return False


async def test_only_a_process_of_its_own_settles_its_heap_once_started(settings):
    before = gc.get_freeze_count()
    try:
        shared = create_app(settings)  # `jobqueue up`, tests: the process is not the API's alone
        async with shared.router.lifespan_context(shared):
            assert gc.get_freeze_count() == before
        own = create_app(settings, own_process=True)  # `jobqueue api`
        async with own.router.lifespan_context(own):
            assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
