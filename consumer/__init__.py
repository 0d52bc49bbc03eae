"""The consumer process: an arq worker on one resource group's queue, running each job on the engine.

    __main__    `python -m consumer`: parses its options, calls `worker.run_consumer`
    worker      the process: settings, start-up checks, arq glue, heartbeats, drain on SIGTERM
    arq_worker  arq's Worker with a one-round-trip job start that outlives a Redis outage
    job         one job's life: claim, run on `jobqueue.engine` under watch (heartbeat, progress,
                cancel, deadline), retry or record the outcome

The query itself runs in `jobqueue.engine` (shared with the SDK's in-process mode).
I/O rule: job state only through `JobStore`, Redis through `jobqueue.redis.connect_redis`, files
through the engine and `jobqueue.storage`. It imports `jobqueue`, never `manager`.
"""
