"""The settings of jobqueue, grouped by the process or concept they configure: one `BaseModel` of fields per group,
which `jobqueue.settings.Settings` combines into the one pydantic-settings class (its fields in the order of
`docs/settings.md`: each group's, in the order `Settings` lists its bases reversed). Import settings from
`jobqueue.settings`, never from here."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from jobqueue.sizes import parse_bytes

ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
