"""The profiling daemon (`jobqueue profiler`; field names after the reference `perf_collector`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from jobqueue.setting_groups import ByteSize


class ProfilerSettings(BaseSettings):
    profiler_perf_polling_frequency_hz: int = Field(
        default=99, ge=1, le=10_000, description="Samples per second per CPU (99 avoids aliasing with timer ticks).")
    profiler_call_graph: bool = Field(default=True, description="Record call stacks (`perf record -g`), not "
                                      "only the sampled function.")
    profiler_dump_duration_seconds: int = Field(
        default=60, ge=1, description="Length of one capture; each becomes one file and the next one starts.")
    profiler_max_dumps_retained: int = Field(
        default=10, ge=1, description="Dumps kept on local disk (uploaded or not); older ones are deleted first.")
    profiler_export_to: str | None = Field(
        default=None, pattern=r"^(s3|gs)://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]/?$",
        description="`s3://bucket` or `gs://bucket` to upload dumps to; unset: keep them local only.")
    profiler_bucket_subdirectory: str = Field(
        default="profiles", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="Key prefix: dumps go to `<subdirectory>/<node>/<UTC timestamp>-perf-data.gz`.")
    profiler_collector: Literal["auto", "perf", "py-spy"] = Field(
        default="auto", description="`auto`: Linux perf where it is permitted, else py-spy.")
    profiler_directory: Path | None = Field(default=None, description="Local dump directory (default "
                                            "`<home>/profiles`).")
    profiler_min_free_bytes: ByteSize = Field(
        default=256 << 20, ge=0, description="Below this much free space in the dump directory the daemon stops "
        "capturing and warns, and resumes when space is back.")
    node_name: str | None = Field(default=None, description="This node's name in object keys (the chart sets it "
                                  "from `spec.nodeName`). Default: the hostname.")
