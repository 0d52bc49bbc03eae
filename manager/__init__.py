"""The manager: one per environment. Watches every resource group's queue, scales its consumers.

    policy, schedule_policy   pure decisions: `decide()`, `plan_firing()` (no I/O, no clock)
    observe                   Redis -> frozen `GroupObservation`s (reads only)
    reconcile                 the loop: observe -> decide -> act, publishes the group state
    reaper, scheduler, gc     re-queue lost jobs, fire scheduled queries, remove expired data
    metrics, leader           Prometheus metrics; leader election over a Kubernetes Lease
    backends/                 how consumers are started and stopped (local processes, Kubernetes)
    runner                    the process entry (`run_manager`)

I/O rule: job state only through `JobStore`; every Redis key comes from `jobqueue.keys`; the
Kubernetes API only in `leader` and `backends/`. It imports `jobqueue`, never `consumer`.
"""
