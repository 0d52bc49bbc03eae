"""Settings errors without secrets: a pydantic `ValidationError` becomes a `SettingsError`.

pydantic's own message shows each failing input (`input_value=...`), and for a whole-model check
that input is every setting at once, so a bad registry path printed the first characters of
`redis_password`. The message here names each variable and the problem, shows the value only of
a setting that is not secret (never for `SecretStr` fields, names with password/secret/token/key,
or unknown names), and strips the credentials from any URL it quotes.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from jobqueue.errors import SettingsError

_SECRET_NAME = re.compile(r"password|secret|token|key", re.IGNORECASE)
_USERINFO = re.compile(r"(?<=://)[^/?#@\s]*@")
_MAX_SHOWN = 80
_NAMED = re.compile(r"^([A-Z][A-Z0-9_]+)\b")


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """` (did you mean `X`?)` for the valid name closest to a misspelt `name` (case-insensitively), else ``."""
    by_upper = {v.upper(): v for v in valid}
    close = difflib.get_close_matches(name.upper(), list(by_upper), n=1, cutoff=0.6)
    return f" (did you mean `{by_upper[close[0]]}`?)" if close else ""


def without_credentials(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by `***`."""
    return _USERINFO.sub("***@", text)


def is_secret(name: str, field: FieldInfo | None) -> bool:
    if field is None or _SECRET_NAME.search(name):
        return True
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def settings_error(error: ValidationError, fields: Mapping[str, FieldInfo], prefix: str) -> SettingsError:
    variables: list[str] = []
    problems: list[str] = []
    for err in error.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        inner = "".join(f"[{p!r}]" if isinstance(p, int) or "." in str(p) else f".{p}" for p in err["loc"][1:])
        prefixed = loc.upper().startswith(prefix)  # a variable's name (an alias, or an env file's line)
        field_name = loc[len(prefix):].lower() if prefixed else loc
        variable = loc.upper() if prefixed or loc.isupper() else prefix + loc.upper() if loc else ""
        message = without_credentials(err["msg"].removeprefix("Value error, "))
        if inner:  # inside a JSON setting (JOBQUEUE_QUOTA_TEAM_OVERRIDES): where in it
            message = f"at {inner.lstrip('.')}: {message}"
        if err["type"] == "extra_forbidden" and not inner:
            message = "not a setting (found in the env file); fix the name, or remove it" + did_you_mean(
                variable, [prefix + f.upper() for f in fields])
        elif loc and not is_secret(field_name, fields.get(field_name)) and not inner:
            message += "" if "got " in message else f" (got {_shown(err.get('input'))})"
        elif loc and not inner:
            message += " (the value is not shown: secret)"
        named = _NAMED.match(message)  # a whole-model check names its variable at the start
        variable = variable or (named.group(1) if named else "")
        if variable:
            variables.append(variable)
        problems.append(f"{variable}: {message}" if variable and not message.startswith(variable) else message)
    return SettingsError(
        "invalid settings: " + "; ".join(problems) + ". `jobqueue settings` describes every setting.",
        tuple(dict.fromkeys(variables)),
    )


def _shown(value: Any) -> str:
    text = without_credentials(repr(value))
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
