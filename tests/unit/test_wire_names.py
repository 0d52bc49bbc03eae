"""Names are declared once, in `jobqueue.keys`: the Lua scripts hold none, and the job hash matches the record."""

from __future__ import annotations

import json
import re

import pytest

from jobqueue import registry_store, store_scripts
from jobqueue.keys import HISTOGRAM_FIELD_PREFIX, CounterName, GroupState, HistogramName, JobField, Keys
from jobqueue.models import JobRecord, JobStatus
from manager import observe

SCRIPTS = {"transition": store_scripts.TRANSITION, "claim": store_scripts.CLAIM,
           "request_cancel": store_scripts.REQUEST_CANCEL, "record_oom_kill": store_scripts.RECORD_OOM_KILL,
           "observe": observe._OBSERVE, "apply_registry": registry_store.APPLY}
KEYS = Keys.for_environment("e")
KEY_PARTS = [KEYS.queue("x"), KEYS.running("x"), KEYS.consumers("x"), KEYS.job("x"), KEYS.heartbeat("x"),
             KEYS.registry_versions + "x", KEYS.registry_current + "x"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_names_no_field_counter_status_or_key(name):
    literals = set(re.findall(r"'([^']*)'", SCRIPTS[name]))
    declared = ({f.value for f in JobField} | {c.value for c in CounterName} | {h.value for h in HistogramName}
                | {s.value for s in JobStatus} | {HISTOGRAM_FIELD_PREFIX}
                | {k.removeprefix(KEYS.prefix).removesuffix("x") for k in KEY_PARTS})
    assert not any(lit.strip(":") in {d.strip(":") for d in declared} for lit in literals if lit), literals


def test_the_job_hash_fields_are_the_record_fields():
    read_time = {"job_id", "wait_reason",  # the key's name; worked out by the SDK when it reads a queued job
                 "shards_done", "rows_done"}  # a sharded query's parent: derived from its shards when read
    assert {f.value for f in JobField} == set(JobRecord.model_fields) - read_time


def test_a_group_state_keeps_its_json_names():
    state = GroupState(current=1, desired=2, direction="up", reason="backlog", detail="d", start_trouble="t")
    assert list(json.loads(state.to_json())) == [
        "current", "desired", "direction", "reason", "detail", "ready", "in_flight", "deferred", "held", "busy",
        "orphaned", "oldest_ready_at", "error", "configured", "live", "start_trouble", "starting_since", "scaled_at",
        "scaled_from", "scaled_to", "scaled_reason", "scaled_detail"]
    assert GroupState.from_json(state.to_json()) == state
