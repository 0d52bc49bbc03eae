"""read_groups() against a real Redis: one script call for every group, running jobs not counted as waiting."""

from __future__ import annotations

from jobqueue.keys import Keys
from jobqueue.models import ConsumerInfo
from manager.observe import ObservationCache, read_groups


async def test_counts_oldest_ready_and_the_cache(arq_redis, environment):
    keys = Keys.for_environment(environment)
    now = 10_000.0
    live = ConsumerInfo(consumer_id="c1", resource_group="g", host="h", pid=1, started_at=now, seen_at=now - 1)
    await arq_redis.zadd(keys.queue("g"), {keys.arq_id("running-old"): 1_000_000, keys.arq_id("waiting"): 2_000_000,
                                           keys.arq_id("later"): 20_000_000})
    await arq_redis.hset(keys.running("g"), "running-old", "c1")
    await arq_redis.hset(keys.consumers("g"), "c1", live.model_dump_json())
    await arq_redis.zadd(keys.queue("only-running"), {keys.arq_id("r"): 1_000_000})
    await arq_redis.hset(keys.running("only-running"), "r", "gone")
    cache = ObservationCache()

    observed = await read_groups(arq_redis, keys, ["g", "only-running", "empty"], now, 5.0, cache)
    g = observed["g"]
    assert (g.stats.ready, g.stats.in_flight, g.stats.deferred, g.stats.busy_consumers) == (1, 1, 1, 1)
    assert g.oldest_ready_ms == 2_000_000, "a running job is not the oldest waiting one"
    only = observed["only-running"]
    assert (only.stats.ready, only.oldest_ready_ms, only.orphaned_jobs) == (0, None, ("r",))
    assert observed["empty"].stats == (0, 0, 0, 0, 0)

    again = await read_groups(arq_redis, keys, ["g"], now + 1, 5.0, cache)
    assert again["g"] is g, "unchanged: the cached observation"
    stale = await read_groups(arq_redis, keys, ["g"], now + 4.5, 5.0, cache)
    assert stale["g"] is not g and stale["g"].stale_consumers == ("c1",), "the heartbeat aged out"



async def test_the_first_due_entries_of_jobs_that_are_over_are_stale_not_ready_nor_held(arq_redis, environment):
    """From the first due entry that is not running, up to the first that is not stale: an entry is stale when its
    record is final and no take holds it (no lock). With a team limit, the held count leaves stale ones out."""
    keys = Keys.for_environment(environment)
    now = 10_000.0
    records = {"running": ("running", 500), "over": ("succeeded", 1_000), "over-2": ("failed", 2_000),
               "taken": ("cancelled", 3_000), "queued": ("queued", 4_000), "over-3": ("failed", 5_000),
               "later-over": ("failed", 20_000_000)}
    for job_id, (status, score) in records.items():
        await arq_redis.hset(keys.job(job_id), mapping={"status": status, "team": '"risk"'})
        await arq_redis.zadd(keys.queue("g"), {keys.arq_id(job_id): score})
    await arq_redis.set(keys.arq_in_progress("taken"), "1")  # a consumer's take holds it
    await arq_redis.hset(keys.running("g"), "running", "c1")
    live = ConsumerInfo(consumer_id="c1", resource_group="g", host="h", pid=1, started_at=now, seen_at=now - 1)
    await arq_redis.hset(keys.consumers("g"), "c1", live.model_dump_json())

    g = (await read_groups(arq_redis, keys, ["g"], now, 5.0, team_limits='{"default": 1, "teams": {}}'))["g"]
    assert g.stale_entries == ("over", "over-2")
    # not looked at past "taken": "queued" needs a consumer anyway, whose take drops "over-3". Team "risk" runs its
    # limit of 1, so the due ones left wait held: taken, queued, over-3
    assert (g.stats.ready, g.stats.held, g.stats.in_flight, g.stats.deferred) == (0, 3, 1, 1)
    assert g.oldest_ready_ms == 3_000, "a stale entry is not the oldest waiting job"
