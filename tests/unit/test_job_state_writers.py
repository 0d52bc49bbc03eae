"""`JobStore` is the only writer of job state: every Redis write in `jobqueue/`, `manager/` and `consumer/`, found
by reading the source (`ast`), goes to a key that is not job state, or is in `jobqueue/jobstore.py`.

Job state: the record `job:<id>`, `queue:<group>`, `running:<group>`, `heartbeat:<id>`, `deadlines`, the `jobs`
index, `oom-kill:<consumer>`, `counters`, `active-jobs`, and arq's per-job keys. The allowed writers of everything else:
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("jobqueue", "manager", "consumer")
STORE = "jobqueue/jobstore.py"
# `JobStore`'s own halves, mixed into it (one class, one concept per module): sharded queries, submitting, indexes
STORE_PARTS = {STORE, "jobqueue/shard_store.py", "jobqueue/submit_store.py", "jobqueue/index_store.py"}
WRITES = {"hset", "hsetnx", "hdel", "hincrby", "hincrbyfloat", "zadd", "zrem", "zremrangebyscore", "delete",
          "unlink", "set", "setex", "psetex", "expire", "pexpire", "persist", "rename", "lpush", "rpush", "sadd",
          "srem", "publish", "register_script", "eval", "evalsha"}
REDIS_HANDLES = ("redis", "pipe", "pool")  # a receiver whose text holds one of these is a Redis client or pipeline
JOB_STATE = {"job", "queue", "running", "heartbeat", "deadlines", "jobs_index", "oom_kill", "counters", "active_jobs",
             "jobs_by", "jobs_by_state", "jobs_by_wait", "jobs_by_duration", "listing_indexes",
             "shard_released",
             "arq_job", "arq_in_progress", "arq_in_progress_of", "arq_retry", "arq_result"}
NOT_JOB_STATE = {  # `Keys` attribute -> why another module may write it
    "consumers": "presence: each consumer's heartbeat JSON, written by itself; the manager drops stale ones",
    "group_states": "the manager's published decisions (`jobqueue status`)",
    "manager_state": "the leader's last tick",
    "groups": "the resource-group configs the manager publishes for SDKs",
    "schedules": "the schedule definitions the manager publishes",
    "schedule": "a schedule's checkpoint and flags: the scheduler and the `jobqueue schedules` CLI",
    "schedule_runs": "the index of a schedule's runs: the scheduler",
    "events": "the pub/sub channel that wakes the manager",
    "token": "an API token's record (its hash, never the token): `jobqueue.auth.tokens.TokenStore`",
    "tokens": "the index of API tokens: `jobqueue.auth.tokens.TokenStore`",
    "console_session": "a web console sign-in (its identity and CSRF token, never the token): "
                       "`jobqueue.console.sessions.SessionStore`",
    "console_live": "the open live streams of a console sign-in: `jobqueue.console.live.LiveStreams`",
    "registry_versions": "the applied feature registries: `RegistryStore.apply`",
    "registry_current": "the current registry version: `RegistryStore.apply`",
    "group_history": "the manager's per-group samples of the last hour (the console's sparklines): "
                     "`manager.group_history`",
    "upload": "a staged upload's reference (owner, object key, expiry), never job state: "
              "`jobqueue.upload_store.UploadStore`",
    "oidc_login": "an OIDC sign-in under way (PKCE verifier, nonce): `jobqueue.console.oidc_signin`",
    "oidc_logins": "the index that caps the OIDC sign-ins under way: `jobqueue.console.oidc_signin`",
    "uploads_of": "an owner's upload references (their quota), never job state: `jobqueue.upload_store.UploadStore`",
}
ALLOWED = {  # (module, call) whose key the scan cannot name -> why it is not a write of job state
    ("manager/observe.py", "register_script"): "the observation script only reads",
    ("consumer/arq_worker.py", "register_script"): "arq's own take (its in-progress lock), as arq's Worker does it",
    ("jobqueue/registry_store.py", "register_script"): "the apply script writes the registry keys alone",
    ("jobqueue/capped_records.py", "register_script"): "stores an OIDC sign-in or an upload reference under its cap",
    ("consumer/arq_worker.py", "delete"): "arq's in-progress lock of a take cut off by an outage, as arq does it",
}


def _key_attribute(node: ast.expr, assigned: dict[str, ast.expr]) -> str | None:
    """The `Keys` attribute a key expression is built from (`self.keys.job(x)`, `keys.counters`), through one
    local assignment (`key = self.keys.schedule(name)`); None when it is built some other way."""
    if isinstance(node, ast.Name) and node.id in assigned:
        node = assigned[node.id]
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and "keys" in ast.unparse(node.value):
        return node.attr
    return None


def writes(source: str, module: str) -> list[tuple[str, int, str, str | None]]:
    """Every Redis write call: (module, line, method, the `Keys` attribute of its key or None)."""
    found = []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assigned = {t.id: n.value for n in ast.walk(func) if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name)}
        for call in ast.walk(func):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in WRITES):
                continue
            receiver = ast.unparse(call.func.value)
            if not any(h in receiver for h in REDIS_HANDLES):
                continue
            key = call.args[0] if call.args else None
            found.append((module, call.lineno, call.func.attr, _key_attribute(key, assigned) if key else None))
    return sorted(set(found))


def violations(found: list[tuple[str, int, str, str | None]]) -> list[str]:
    out = []
    for module, line, method, key in found:
        if module in STORE_PARTS or key in NOT_JOB_STATE or (module, method) in ALLOWED:
            continue
        what = f"job state ({key})" if key in JOB_STATE else f"a key the scan cannot name ({key})"
        out.append(f"{module}:{line}: {method} writes {what}; make it a JobStore method")
    return out


def all_writes() -> list[tuple[str, int, str, str | None]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            found += writes(path.read_text(), module)
    return found


def test_job_state_is_written_by_the_job_store_only():
    found = all_writes()
    assert violations(found) == []
    # the scan sees the writes it judges: the store's, and the allowed writers of other keys
    modules = {m for m, *_ in found}
    assert {STORE, "consumer/worker.py", "manager/reconcile.py", "manager/scheduler.py",
            "jobqueue/schedule_control.py"} <= modules  # the CLI pauses and runs schedules through the SDK now
    # (no "events": the submitted wake is published by the store's submit script since it saved a round trip)
    assert {key for *_, key in found} >= {"consumers", "group_states", "schedule", "schedule_runs"}


def test_the_scan_finds_a_write_of_job_state_wherever_it_is():
    source = '''
async def renew(self, job_id):
    async with self.redis.pipeline(transaction=False) as pipe:
        pipe.hset(self.keys.job(job_id), "progress", "0.5")
    key = self.keys.queue("g")
    await self.redis.zrem(key, job_id)
    await client.redis.delete(f"arq:job:{job_id}")
    await stop.set()
'''
    assert violations(writes(source, "consumer/job.py")) == [
        "consumer/job.py:4: hset writes job state (job); make it a JobStore method",
        "consumer/job.py:6: zrem writes job state (queue); make it a JobStore method",
        "consumer/job.py:7: delete writes a key the scan cannot name (None); make it a JobStore method",
    ]
