"""The profiling daemon (`jobqueue profiler`): CPU profiles of this node's jobqueue processes.

It runs on every consumer node (the chart's optional DaemonSet), samples only the manager and
consumer processes with Linux `perf` (or py-spy where perf is not permitted), rotates one dump per
`dump_duration_seconds`, keeps the newest `max_dumps_retained` locally, and uploads each to
`<export_to>/<bucket_subdirectory>/<node>/<UTC timestamp>-perf-data.gz`.

    targets     which processes are ours (their role is in their process name)
    collectors  perf and py-spy behind one Protocol
    dumps       naming and retention (pure)
    daemon      the capture / retain / upload loop

I/O rule: reads `/proc`, runs `perf` / `py-spy` as subprocesses, writes dumps on local disk and
uploads them through `jobqueue.storage`. No Redis. It imports neither `manager` nor `consumer`:
it recognises their processes by name (`targets`).
"""
