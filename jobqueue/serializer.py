"""JSON job serialization for arq. arq's default is pickle, which would let anyone who can write
to Redis run code in our processes; jobqueue never uses it.

`dumps`/`loads` are passed to both `arq.create_pool` and `arq.Worker`. `loads` accepts only the
arq envelope `{t, f, a, k, et}` (plus result fields) with JSON values, so a pickle or garbage
payload fails to decode and arq rejects that one job; the worker keeps running.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

MAX_PAYLOAD_BYTES = 1 << 20
_ENVELOPE_KEYS = {"t", "f", "a", "k", "et"}
_RESULT_KEYS = _ENVELOPE_KEYS | {"s", "r", "st", "ft", "q", "id"}


class PayloadError(ValueError):
    pass


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": str(value)}
    if isinstance(value, (set, tuple)):
        return list(value)
    return repr(value)


def dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=_default, separators=(",", ":")).encode()


def loads(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(raw)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"payload is not JSON: {e}") from None
    except RecursionError:
        raise PayloadError("payload is nested too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError("payload is not a JSON object")
    keys = set(data)
    if not (_ENVELOPE_KEYS <= keys <= _RESULT_KEYS):
        raise PayloadError(f"payload keys {sorted(keys)} are not an arq job envelope")
    if not isinstance(data["f"], str) or not isinstance(data["a"], list) or not isinstance(data["k"], dict):
        raise PayloadError("payload fields f/a/k must be a string, a list and an object")
    if not isinstance(data["et"], int) or not (data["t"] is None or isinstance(data["t"], int)):
        raise PayloadError("payload fields et/t must be integers")
    return data
