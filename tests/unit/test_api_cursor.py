"""The listing cursor of the API: a page's last position round-trips through its text, and only texts of
`CURSOR_PATTERN` (what the OpenAPI document declares) are positions."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobqueue.api.listing import CURSOR_PATTERN, Position
from jobqueue.errors import InvalidQueryError
from jobqueue.models import JOB_ID_PATTERN


@given(when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
       job_id=st.from_regex(JOB_ID_PATTERN, fullmatch=True))
def test_a_position_round_trips_and_matches_the_declared_pattern(when, job_id):
    ms = when.timestamp() * 1000  # the jobs index's score of a job submitted then (`JobStore`)
    text = Position(ms, job_id).encode()
    assert re.match(CURSOR_PATTERN, text), text
    assert Position.decode(text) == Position(ms, job_id)


@pytest.mark.parametrize("text", ["", "abc", "12", "_id", "1e5_id", "-1_id", "1.5_", "1_ spaces"])
def test_other_texts_are_refused_naming_the_cursor(text):
    with pytest.raises(InvalidQueryError) as e:
        Position.decode(text)
    assert e.value.field == "cursor"
