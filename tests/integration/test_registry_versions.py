"""The registry served from Redis: `jobqueue registry apply/show/history`, jobs pinned to the version they were
planned against, consumers without a registry file, and what a client or a consumer does when versions differ."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobqueue import AsyncJobQueueClient, InvalidQueryError, JobStatus
from jobqueue.engine.execute import PreparedQuery
from jobqueue.errors import RegistryMismatchError
from jobqueue.registry import load_registry
from jobqueue.sample import SampleStore, sample_input
from tests.helpers import eventually, running_manager, with_groups, worker_running
from tests.integration.test_cli_jobs import cli
from tests.reference import assert_same, reference


def registry_file(store: SampleStore, path: Path, rename: tuple[str, str] | None = None) -> Path:
    """The sample store's registry with absolute paths (so it can live anywhere); `rename` (old, new) renames a
    feature, reading the same column."""
    doc = store.read_registry()
    for src in doc["namespaces"]["user"]["sources"]:
        src["path"] = str(store.root / src["path"])
        if rename and rename[0] in src.get("features", []):
            src["features"] = {(rename[1] if f == rename[0] else f): f for f in src["features"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_apply_show_history_round_trip(redis_url, environment, store, tmp_path):
    run = lambda *a: cli(redis_url, environment, tmp_path / "home", *a)  # noqa: E731
    v1 = registry_file(store, tmp_path / "v1.yaml")
    code, out = run("registry", "apply", str(v1))
    assert code == 0 and "applied as version 1-" in out, out
    first = out.split("version ")[1].split()[0]
    code, out = run("registry", "apply", str(v1))  # identical content: the current version, nothing stored
    assert code == 0 and f"unchanged: already the current version {first}" in out, out
    code, shown = run("registry", "show")
    assert code == 0 and shown.startswith(f"# registry version {first}, applied "), shown
    assert yaml.safe_load(shown)["namespaces"]["user"]["sources"][0]["features"]["f0"] == "f0"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "shown.yaml").write_text(shown)  # what `show` prints applies back unchanged
    code, out = run("registry", "apply", str(tmp_path / "elsewhere" / "shown.yaml"))
    assert code == 0 and f"already the current version {first}" in out, out

    code, out = run("registry", "apply", str(registry_file(store, tmp_path / "v2.yaml", rename=("f0", "score"))))
    assert code == 0 and "applied as version 2-" in out, out
    second = out.split("version ")[1].split()[0]
    code, out = run("registry", "history", "--json")
    history = json.loads(out)
    assert [(h["version"], h["current"]) for h in history] == [(first, False), (second, True)], out
    assert history[0]["origin"] == str(v1) and history[0]["namespaces"] == 1 and history[0]["features"] == 3 + 2 + 6
    assert history[0]["applied_by"] and " on " in history[0]["applied_by"]
    code, out = run("registry", "history")
    assert code == 0 and first.split("-")[1] in out and second.split("-")[1] in out, out
    code, out = run("registry", "show", "1")
    assert code == 0 and "score" not in yaml.safe_load(out)["namespaces"]["user"]["sources"][0]["features"]
    code, out = run("registry", "show", second)
    assert code == 0 and yaml.safe_load(out)["namespaces"]["user"]["sources"][0]["features"]["score"] == "f0"
    code, out = run("registry", "show", "9")
    assert code == 1 and "no registry version 9" in out, out
    code, out = run("registry", "apply", str(v1))  # a roll-back is a new version
    assert code == 0 and "applied as version 3-" + first.split("-")[1] in out, out


@pytest.mark.parametrize("bad", ["field", "yaml"])
async def test_an_invalid_registry_is_rejected_and_nothing_is_stored(redis_url, environment, store, tmp_path,
                                                                     arq_redis, settings, bad):
    path = registry_file(store, tmp_path / "bad.yaml")
    if bad == "field":
        doc = yaml.safe_load(path.read_text())
        del doc["namespaces"]["user"]["sources"][1]["key"]
        path.write_text(yaml.safe_dump(doc))
    else:
        path.write_text("namespaces: [unclosed")
    code, out = cli(redis_url, environment, tmp_path / "home", "registry", "apply", str(path))
    assert code == 1, out
    if bad == "field":
        assert f"{path}: namespace 'user': sources.1.key: Field required" in out, out
    else:
        assert f"{path}: not valid YAML" in out, out
    async with AsyncJobQueueClient(settings) as client:
        assert not await arq_redis.exists(client.keys.registry_versions, client.keys.registry_current)


async def test_a_queued_job_runs_on_the_version_it_pinned_after_a_rename(settings, store, tmp_path):
    """The issue's test: apply v1, submit, apply v2 that renames a feature; the job (queued while no consumer
    runs) completes on v1 with v1's column names, and jobs submitted after plan against v2. Neither the client
    nor the consumer has a registry file."""
    fileless = settings.model_copy(update={"registry_path": None})
    ids, times = sample_input(store.users, 300)
    async with AsyncJobQueueClient(fileless) as client:
        v1 = (await client.registries.apply(load_registry(registry_file(store, tmp_path / "v1.yaml")))).version
        job = await client.offline_query(ids, ["user.f0", "user.logins"], times)
        v2_file = registry_file(store, tmp_path / "v2.yaml", rename=("f0", "score"))
        v2 = (await client.registries.apply(load_registry(v2_file))).version
        assert (v1.number, v2.number) == (1, 2)
        with pytest.raises(InvalidQueryError, match="f0"):  # new jobs plan against v2
            await client.offline_query(ids, ["user.f0"], times)
        renamed = await client.offline_query(ids, ["user.score"], times)
        assert (await client.get_job(job.id)).status is JobStatus.QUEUED
        async with worker_running(fileless):
            record = await job.wait(timeout=60, show_progress=False)
            assert record.status is JobStatus.SUCCEEDED and record.registry_version == v1.id
            df = await job.to_pandas()
            assert list(df.columns) == ["user.id", "user.f0", "user.logins"]
            assert_same(df, reference(store, ids["user.id"], times, ["user.f0", "user.logins"]))
            record = await renamed.wait(timeout=60, show_progress=False)
            assert record.status is JobStatus.SUCCEEDED and record.registry_version == v2.id
            df = await renamed.to_pandas()
            assert list(df.columns) == ["user.id", "user.score"]
            expected = reference(store, ids["user.id"], times, ["user.f0"]).rename(columns={"user.f0": "user.score"})
            assert_same(df, expected)


class Gated:
    """PreparedQuery, held before it executes until the test lets it go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.query = PreparedQuery(*args, **kwargs)
        self.go = threading.Event()

    def execute(self) -> Any:
        if not self.go.wait(60):
            raise TimeoutError("never let go")
        return self.query.execute()

    def interrupt(self) -> None:
        self.query.interrupt()

    def progress(self) -> float:
        return self.query.progress()


async def test_a_running_job_is_not_affected_by_a_later_apply(settings, store, tmp_path):
    fileless = settings.model_copy(update={"registry_path": None})
    gated: list[Gated] = []

    def prepare(*args: Any, **kwargs: Any) -> Gated:
        gated.append(Gated(*args, **kwargs))
        return gated[-1]

    ids, times = sample_input(store.users, 200)
    async with AsyncJobQueueClient(fileless) as client:
        v1 = (await client.registries.apply(load_registry(registry_file(store, tmp_path / "v1.yaml")))).version
        job = await client.offline_query(ids, ["user.f0"], times)
        async with worker_running(fileless, prepare=prepare):
            await eventually(lambda: gated, what="the job running")
            v2_file = registry_file(store, tmp_path / "v2.yaml", rename=("f0", "score"))
            assert (await client.registries.apply(load_registry(v2_file))).created
            gated[0].go.set()
            record = await job.wait(timeout=60, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.registry_version == v1.id
        assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, ["user.f0"]))


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_job_whose_pinned_version_is_gone_fails_naming_it(settings, store, tmp_path, how):
    """Never run on another version: not the consumer's own file, not what another version holds."""
    fileless = settings.model_copy(update={"registry_path": None})
    async with AsyncJobQueueClient(fileless) as client:
        v1 = (await client.registries.apply(load_registry(registry_file(store, tmp_path / "v1.yaml")))).version
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        if how == "deleted":
            await client.redis.hdel(client.keys.registry_versions, "1")
        else:
            await client.registries.apply(load_registry(registry_file(store, tmp_path / "v2.yaml", ("f0", "x"))))
            other = await client.redis.hget(client.keys.registry_versions, "2")
            await client.redis.hset(client.keys.registry_versions, "1", other)
        async with worker_running(settings):  # this consumer has the file v1 was applied from
            record = await eventually(lambda: _final(client, job.id), timeout=60, what="the job ended")
        assert record.status is JobStatus.FAILED and record.attempts == 1, record
        assert f"the job pins registry version {v1.id}, which is not available" in record.error
        assert "not run on another version" in record.error


async def _final(client: AsyncJobQueueClient, job_id: str):
    record = await client.get_job(job_id)
    return record if record.status.is_final else None


async def test_with_no_version_in_redis_everything_works_as_before(settings, store):
    """A job planned against the client's file pins no version (as one queued by an older SDK): the consumer
    plans it with its own file, and the payload carries no new field for older consumers to refuse."""
    ids, times = sample_input(store.users, 100)
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, ["user.f1"], times)
        assert (await client.get_job(job.id)).registry_version is None
        assert b"registry_version" not in await client.redis.get(client.keys.arq_job(job.id))
        async with worker_running(settings):
            record = await job.wait(timeout=60, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.registry_version is None
        assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, ["user.f1"]))


async def test_a_client_whose_file_is_not_the_current_version_submits_nothing(settings, store, tmp_path):
    async with AsyncJobQueueClient(settings) as client:  # JOBQUEUE_REGISTRY_PATH: the sample store's file
        served = await client.registries.apply(load_registry(registry_file(store, tmp_path / "v1.yaml", ("f0", "x"))))
        with pytest.raises(RegistryMismatchError) as info:
            await client.offline_query({"user.id": [1]}, ["user.f1"])
        message = str(info.value)
        assert str(store.registry_path) in message and served.version.id in message
        assert "nothing was submitted" in message
        assert f"jobqueue registry apply {store.registry_path}" in message
        assert await client.redis.zcard(client.keys.queue("default")) == 0
        assert not (settings.home / "staging").exists()
        applied = await client.registries.apply(load_registry(store.registry_path))  # apply the client's file
        assert applied.created and applied.version.number == 2
        job = await client.offline_query({"user.id": [1]}, ["user.f1"])
        assert (await client.get_job(job.id)).registry_version == applied.version.id


async def test_the_manager_applies_its_registry_file_at_start_once(settings, store, tmp_path):
    """`jobqueue up` with JOBQUEUE_REGISTRY_PATH: the README flow, with the SDK pointed at the same file."""
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}})
    async with AsyncJobQueueClient(settings) as client:
        async with running_manager(settings):
            current = await eventually(client.registries.current_id, what="the manager applied its file")
            ids, times = sample_input(store.users, 100)
            job = await client.offline_query(ids, ["user.f0"], times)
            record = await job.wait(timeout=60, show_progress=False)
            assert record.status is JobStatus.SUCCEEDED and record.registry_version == current
        version = await client.registries.version(current)
        assert version.origin == str(store.registry_path) and "JOBQUEUE_REGISTRY_PATH" in (version.applied_by or "")
        async with running_manager(settings):  # started again with the same file: no new version
            await eventually(lambda: client.redis.hget(client.keys.manager_state, "tick_at"), what="a tick")
        assert [v.id for v in await client.registries.history()] == [current]
