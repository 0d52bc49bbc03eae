"""The `jobqueue` command line, and the composition root: the one place inside `jobqueue/` that may
import `manager` and `consumer`.

It does so only inside the body of the command that starts that process: `up` and `manager`
(`manager.runner`), `consumer` (`consumer.worker.run_consumer`), `demo` (`run_demo` starts the manager
with the local backend) and `gc` (one pass of the manager's garbage collector). Every other command
(`status`, `jobs`, `schedules`, `settings`, `profiler`) reads the shared contract in `jobqueue/` or
calls the SDK, so it runs where neither process is installed. `tests/unit/test_layers.py` holds
this to an allow-list of those functions.

I/O: what each command's SDK, Redis or process call does; nothing at import time.
"""
