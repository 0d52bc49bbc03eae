"""The manager's per-group samples (`manager.group_history`) and the console's sparklines of them
(`jobqueue.console.sparkline`): pure parts, no Redis."""

from __future__ import annotations

from jobqueue.console.sparkline import HEIGHT, WIDTH, sparkline
from jobqueue.group_samples import GroupSample
from jobqueue.keys import GroupState, Keys
from manager.group_history import GroupHistory


class Pipe:
    """Records the commands queued on it, as a Redis pipeline would send them."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str):  # noqa: ANN204
        return lambda *args: self.commands.append((name, args))


def state(**counts: int) -> GroupState:
    return GroupState(**counts)  # type: ignore[arg-type]


def test_a_steady_group_is_written_once_per_interval_and_a_burst_keeps_its_peak():
    history = GroupHistory(Keys.for_environment("e"), interval_seconds=10)
    pipe = Pipe()
    assert history.record(pipe, {"g": state(ready=2, live=0)}, now=100.0) == 1
    assert history.record(pipe, {"g": state(ready=2, live=0)}, now=101.0) == 0  # nothing new: no write
    assert history.record(pipe, {"g": state(ready=0, live=3, busy=2)}, now=105.0) == 1  # a peak grew
    assert history.record(pipe, {"g": state(ready=1, live=1)}, now=109.9) == 0  # below the peaks
    added = [args[1] for name, args in pipe.commands if name == "zadd"]
    last = GroupSample.from_member(next(iter(added[-1])))
    assert (last.at, last.ready, last.consumers, last.busy) == (100.0, 2, 3, 2)  # the peaks of the interval
    assert history.record(pipe, {"g": state(ready=0, live=0)}, now=110.0) == 1  # the next interval
    replaced = [args for name, args in pipe.commands if name == "zremrangebyscore" and args[1] == args[2]]
    assert all(args[0] == "jobqueue:e:group-history:g" for args in replaced) and len(replaced) == 3
    trims = [args for name, args in pipe.commands if name == "zremrangebyscore" and args[1] == "-inf"]
    assert trims[-1][2] == f"({110.0 - 3600 - 10}"  # older than the hour (and one interval) goes
    assert ("expire", ("jobqueue:e:group-history:g", 3620)) in pipe.commands


def test_a_sparkline_rises_with_its_values_and_says_so_in_words():
    now = 10_000.0
    samples = [GroupSample(at=now - 3600 + i * 600, consumers=c) for i, c in enumerate([0, 1, 3, 0])]
    line = sparkline(samples, lambda s: s.consumers, now, "consumers of g")
    assert line.peak == 3 and line.latest == 0
    assert line.text == "consumers of g over the last hour: peak 3, now 0 (4 samples)"
    points = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in points)
    ys = [y for _, y in points]
    assert min(ys) == 2.0 and max(ys) == HEIGHT - 2  # the peak at the top, 0 at the bottom
    assert [x for x, _ in points] == sorted(x for x, _ in points)  # time runs left to right


def test_a_sample_is_a_short_line_of_numbers_and_reads_back():
    sample = GroupSample(at=1764748800.0, ready=3, in_flight=1, deferred=0, consumers=2, busy=1, desired=2)
    assert sample.to_member() == "1764748800 3 1 0 2 1 2"
    assert GroupSample.from_member(sample.to_member().encode()) == sample
    assert GroupSample.from_member("1764748800 3 1 0 2 1 2 9 9") == sample  # a later version's extra fields
    assert GroupSample.from_member("1764748800 3") == GroupSample(at=1764748800.0, ready=3)


def test_a_sparkline_of_many_samples_draws_one_step_per_unit_of_width_keeping_each_peak():
    now = 10_000.0
    samples = [GroupSample(at=now - 3600 + i, consumers=5 if i == 1801 else 0) for i in range(3600)]
    line = sparkline(samples, lambda s: s.consumers, now, "consumers of g")
    assert len(line.points.split()) <= 2 * WIDTH + 2 and line.peak == 5
    assert any(float(p.split(",")[1]) == 2.0 for p in line.points.split()), "the one-second burst still shows"


def test_no_samples_and_samples_older_than_the_hour_draw_nothing():
    old = [GroupSample(at=0.0, ready=5)]
    for samples in ([], old):
        line = sparkline(samples, lambda s: s.depth, 10_000.0, "queue depth of g")
        assert line.points == "" and line.latest is None and "no samples yet" in line.text
