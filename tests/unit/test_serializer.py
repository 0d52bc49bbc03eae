"""The arq job serializer is JSON only: pickle and garbage are refused without being executed."""

from __future__ import annotations

import pickle

import pytest

from jobqueue import serializer


class Boom:
    executed = False

    def __reduce__(self):
        return (Boom._run, ())

    @staticmethod
    def _run():  # pragma: no cover - must never run
        Boom.executed = True


def test_round_trip():
    data = {"t": 1, "f": "run_offline_query", "a": [], "k": {"job": {"x": 1}}, "et": 5}
    assert serializer.loads(serializer.dumps(data)) == data


def test_pickle_is_rejected_without_executing():
    with pytest.raises(serializer.PayloadError, match="not JSON"):
        serializer.loads(pickle.dumps({"t": 1, "f": "x", "a": [], "k": {"b": Boom()}, "et": 1}))
    assert not Boom.executed


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[1,2]", b'{"f": "x"}', b'{"t":1,"f":1,"a":[],"k":{},"et":1}',
     b'{"t":1,"f":"x","a":{},"k":{},"et":1}', b'{"t":"1","f":"x","a":[],"k":{},"et":1}',
     b'{"t":1,"f":"x","a":[],"k":{},"et":1,"evil":1}', b"\xff\xfe", b"{" * 10],
)
def test_garbage_is_rejected(raw):
    with pytest.raises(serializer.PayloadError):
        serializer.loads(raw)


def test_oversized_payload_is_rejected():
    with pytest.raises(serializer.PayloadError, match="limit"):
        serializer.loads(b" " * (serializer.MAX_PAYLOAD_BYTES + 1))


def test_results_with_exceptions_serialize():
    out = serializer.dumps({"r": ValueError("bad"), "s": False})
    assert b"ValueError" in out
