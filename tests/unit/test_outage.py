from __future__ import annotations

import structlog

from jobqueue.outage import Outage, redacted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_logs_its_start_then_rarely_then_its_end():
    clock, log = Clock(), structlog.get_logger("t")
    outage = Outage(log, "the loop", every=30.0, clock=clock)
    with structlog.testing.capture_logs() as events:
        backoffs = []
        for _ in range(8):
            backoffs.append(outage.failed(ConnectionError("refused")))
            clock.now += 5
        outage.recovered()
        outage.recovered()  # a second success says nothing
    assert backoffs == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    assert [e["event"] for e in events] == [
        "redis unreachable; the loop will retry", "redis still unreachable; the loop retrying",
        "redis reachable again; the loop resumed"]
    assert events[1]["down_seconds"] == 30.0 and events[2]["down_seconds"] == 40.0
    assert not outage.ongoing and outage.failed(ConnectionError("x")) == 0.5


def test_redacted_drops_credentials_and_query():
    assert redacted("rediss://user:pw@redis.internal:6380/2?ssl_ca_certs=/x") == "rediss://redis.internal:6380/2"
    assert redacted("redis://localhost/0") == "redis://localhost/0"
