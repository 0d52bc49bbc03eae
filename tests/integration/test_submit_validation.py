"""Bad input is refused at submit with an error naming the field, before anything is staged or enqueued."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobqueue import AsyncJobQueueClient, InvalidQueryError, ResourceRequests
from tests.helpers import with_groups

CASES = [
    ("unknown group",
     dict(input={"user.id": [1]}, output=["user.f0"], resources=ResourceRequests(resource_group="gpu")),
     "resources.resource_group", ["'gpu'", "known groups: default, tight"]),
    ("unknown feature", dict(input={"user.id": [1]}, output=["user.nope"]), "output[0]", ["unknown feature"]),
    ("unknown namespace", dict(input={"user.id": [1]}, output=["card.limit"]), "output[0]", ["unknown namespace"]),
    ("missing primary key", dict(input={"user.f0": [1.0]}, output=["user.f1"]), "input", ["primary key 'user.id'"]),
    ("ragged columns", dict(input={"user.id": [1, 2], "user.f0": [1.0]}, output=["user.f1"]), "input",
     ["different lengths"]),
    ("empty input", dict(input={"user.id": []}, output=["user.f0"]), "input", ["empty"]),
    ("input_times length", dict(input={"user.id": [1, 2]}, output=["user.f0"], input_times=[datetime.now(UTC)]),
     "input_times", ["1 values but the input has 2 rows"]),
    ("output is a string", dict(input={"user.id": [1]}, output="user.f0"), "output", ["list"]),
    ("too many rows", dict(input={"user.id": list(range(1001))}, output=["user.f0"]), "input",
     ["1001 rows, over JOBQUEUE_MAX_INPUT_ROWS=1000", "split it"]),
    ("too many bytes", dict(input={"user.id": list(range(600))}, output=["user.f0"]), "input",
     ["4800 bytes, over JOBQUEUE_MAX_INPUT_BYTES=4096"]),
]


@pytest.mark.parametrize(("case", "kwargs", "field", "words"), CASES, ids=[c[0] for c in CASES])
async def test_rejected_before_enqueue(settings, tmp_path, case, kwargs, field, words):
    settings = with_groups(settings, tmp_path, {"tight": {"max_instances": 1}}, max_input_rows=1000,
                           max_input_bytes=4096)
    async with AsyncJobQueueClient(settings) as client:
        with pytest.raises(InvalidQueryError) as info:
            await client.offline_query(**kwargs)
        assert info.value.field == field, case
        for w in words:
            assert w in str(info.value), case
        assert await client.redis.zcard(client.keys.queue("default")) == 0
        assert await client.redis.zcard(client.keys.jobs_index) == 0
        assert not (settings.home / "staging").exists()


async def test_groups_published_by_the_manager_win_over_the_local_file(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"tight": {"max_instances": 1}})
    async with AsyncJobQueueClient(settings) as client:
        assert await client.known_groups() == ["default", "tight"]
        await client.redis.hset(client.keys.groups, mapping={"default": "{}", "big": "{}"})
        assert await client.known_groups() == ["big", "default"]
