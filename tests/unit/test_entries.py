"""Which queue entries may reach arq (pure checks), arq ids per environment, and capped error text."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.entries import MAX_TIME_MS, entry_problem, envelope_problem, score_problem
from jobqueue.keys import Keys
from jobqueue.logs import MAX_ERROR_BYTES, cap_values, capped
from jobqueue.models import JOB_ID_PATTERN
from manager.observe import _summarize_part

KEYS = Keys.for_environment("prod")
NOW_MS = 1_700_000_000_000


def env(**fields) -> bytes:
    return json.dumps({"t": 1, "f": "run_offline_query", "a": [], "k": {"job": {}}, "et": NOW_MS, **fields}).encode()


@pytest.mark.parametrize("score", [0, NOW_MS, b"1700000000000", "1e+12", MAX_TIME_MS])
def test_times_are_scores(score):
    assert score_problem(score) is None


@pytest.mark.parametrize("score", [b"-inf", b"inf", "nan", float("-inf"), 1e20, -1, -1e20, MAX_TIME_MS + 1, b"x"])
def test_anything_else_is_not(score):
    assert "queue score" in score_problem(score)


@pytest.mark.parametrize(("raw", "why"), [
    (None, "missing"), (b"\xff\xfe", "undecodable"), (b"[" * 50_000 + b"]" * 50_000, "undecodable"),
    (env(f="os.system"), "unknown function"), (env(a=[1]), "unexpected arguments"),
    (env(k={"job": {}, "x": 1}), "unexpected arguments"), (env(k={}), "unexpected arguments"),
    (env(t=10_000), "job try"), (env(t=-1), "job try"), (env(et=10**20), "enqueue time"), (env(et=-1), "enqueue time"),
])
def test_envelopes_arq_would_refuse_or_crash_on(raw, why):
    assert why in envelope_problem(raw)


def test_a_good_entry_passes_and_a_foreign_member_does_not():
    assert envelope_problem(env()) is None and envelope_problem(env(t=None)) is None
    assert entry_problem(KEYS, KEYS.arq_id("abc"), NOW_MS, env()) is None
    assert "not a job of this environment" in entry_problem(KEYS, "abc", NOW_MS, env())
    assert "not a job of this environment" in entry_problem(KEYS, Keys.for_environment("dev").arq_id("a"), 1, env())


@given(st.from_regex(JOB_ID_PATTERN, fullmatch=True), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True))
def test_arq_ids_map_back_to_their_job_and_only_in_their_environment(job_id, other):
    assert KEYS.job_id_of(KEYS.arq_id(job_id)) == job_id
    if other != "prod":
        assert Keys.for_environment(other).job_id_of(KEYS.arq_id(job_id)) is None
        assert Keys.for_environment(other).arq_job(job_id) != KEYS.arq_job(job_id)


@given(st.text(max_size=3 * MAX_ERROR_BYTES))
def test_capped_text_fits_and_short_text_is_kept(text):
    out = capped(text)
    assert len(out.encode("utf-8", "surrogatepass")) <= MAX_ERROR_BYTES
    if len(text.encode("utf-8", "surrogatepass")) <= MAX_ERROR_BYTES:
        assert out == text


def test_log_values_and_tracebacks_are_capped():
    name = "f" * 500_000
    event = cap_values(None, "error", {"event": "job failed", "error": name, "exception": f"Traceback\n{name}\nend"})
    assert len(event["error"]) <= MAX_ERROR_BYTES and event["error"].endswith("bytes cut)")
    assert event["exception"].startswith("Traceback\n") and event["exception"].endswith("\nend")
    assert len(event["exception"]) < 3 * MAX_ERROR_BYTES


def test_one_unreadable_group_does_not_hide_the_others():
    good = [1, 0, b"-inf", [], [], [], 0, []]
    out = _summarize_part(["a", "b", "c"], [good, [b"!error", b"WRONGTYPE Operation"], [1, 0]], 100.0, 5.0, None)
    assert out["a"].error is None and out["a"].oldest_ready_ms == 0 and out["a"].stats.ready == 1
    assert out["b"].error == "WRONGTYPE Operation" and out["c"].error.startswith("ValueError")
