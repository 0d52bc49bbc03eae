"""What the SDK accepts (and how it shards a query with `num_shards="auto"`), how it waits, and the team it records
by default."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from jobqueue.setting_groups import ByteSize


class ClientSettings(BaseSettings):
    max_input_rows: int = Field(
        default=50_000_000, ge=1, description="Largest query input the SDK accepts, in rows; a bigger one is "
        "refused at submit (split it, or raise this).",
    )
    shard_target_rows: int = Field(
        default=2_000_000, ge=1, description="`offline_query(num_shards=\"auto\")`: input rows per shard; "
        "N = ceil(rows / this), at least 1 and at most JOBQUEUE_SHARD_MAX_AUTO. Set it to what one consumer of "
        "the group answers comfortably in its memory (about 1M rows per GiB of consumer memory for a few features).",
    )
    shard_max_auto: int = Field(
        default=64, ge=1, le=1024, description="`num_shards=\"auto\"` never picks more shards than this.",
    )
    max_input_bytes: ByteSize = Field(
        default=8 << 30, ge=1, description="Largest query input the SDK accepts, in Arrow bytes (e.g. `8GiB`); a "
        "bigger one is refused at submit.",
    )
    wait_poll_seconds: float = Field(
        default=2.0, gt=0, description="`wait()` blocks on the job's finish event (Redis pub/sub) and reads the "
        "record again at the latest after this long: the safety net for a missed event (a Redis restart, a "
        "consumer of a version that does not publish it).",
    )
    team: str = Field(
        default="", pattern=r"^$|^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The team the SDK records on the jobs it submits when `offline_query(team=...)` is not given "
        "(empty: none). Lowercase letters, digits, '_' or '-'.",
    )
