"""`wait()` in a real Jupyter kernel (ipykernel, run by nbclient): the progress bar is drawn in the cell.

rich draws into a kernel only through ipywidgets, which is not a dependency, so the bar used to draw nothing
there (issue 18, item 6). The kernel is this venv's python, from a kernelspec written for the test, with the
test's settings in its environment; the stack is the real manager, which spawns a consumer process.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from jobqueue.settings import Settings
from tests.helpers import running_manager, with_groups

KERNEL = "jobqueue-test"
SUBMIT = """
from jobqueue import JobQueueClient
client = JobQueueClient()
job = client.offline_query({"user.id": [1, 2, 3]}, ["user.f0"])
print("submitted", job.id)
"""


def kernelspec(jupyter_path: Path) -> None:
    """A kernelspec running this very interpreter, so the kernel sees this venv (and nothing is installed)."""
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jobqueue test", "language": "python",
    }))


def kernel_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(
        JOBQUEUE_REDIS_URL=str(settings.redis_url), JOBQUEUE_ENVIRONMENT=settings.environment,
        JOBQUEUE_HOME=str(settings.home), JOBQUEUE_REGISTRY_PATH=str(settings.registry_path),
        JOBQUEUE_RESOURCE_GROUPS_PATH=str(settings.resource_groups_path),
        PYTHONPATH=os.pathsep.join(sys.path),  # the checkout under test, as in this process
        IPYTHONDIR=str(tmp_path / "ipython"), JUPYTER_PLATFORM_DIRS="1",
    )
    return env


def drawn(outputs: list[dict[str, Any]]) -> str:
    """What a cell showed: its streams and the text of what it displayed (a widget's text/plain included)."""
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("display_data", "update_display_data", "execute_result"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "\n".join(parts)


@pytest.fixture
def jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our kernelspec first on the Jupyter path; connection files in the test's directory; jupyter_core's new
    paths (the old ones warn)."""
    kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")


async def run_notebook(cells: list[str], settings: Settings, tmp_path: Path, interrupt: int | None = None
                       ) -> list[dict[str, Any]]:
    """Execute `cells` in a new kernel (shut down afterwards); each cell's outputs. Cell `interrupt` is
    interrupted (Ctrl-C, as the notebook's stop button) after a few seconds."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells])
    if interrupt is not None:
        nb.cells[interrupt].metadata["tags"] = ["raises-exception"]

    def timeout(cell: Any) -> int:
        return 4 if "raises-exception" in cell.metadata.get("tags", []) else 180

    client = NotebookClient(nb, kernel_name=KERNEL, timeout_func=timeout, interrupt_on_timeout=True)
    await client.async_execute(env=kernel_env(settings, tmp_path), cwd=str(tmp_path))
    return [cell["outputs"] for cell in nb.cells]


async def test_wait_draws_its_progress_bar_in_a_notebook(settings, tmp_path, jupyter):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}})
    cells = [
        SUBMIT,
        "print(job.wait(timeout=120, show_progress=True).status.value)",
        """
        job2 = client.offline_query({"user.id": [4]}, ["user.f0"])
        print("submitted", job2.id)
        print(job2.wait(timeout=120).status.value)  # a notebook draws the bar by default too
        """,
        "client.close()",
    ]
    async with running_manager(settings):
        outputs = await run_notebook(cells, settings, tmp_path)
    job_id = re.search(r"submitted (\w+)", drawn(outputs[0])).group(1)
    shown = drawn(outputs[1])
    assert "succeeded" in shown, shown
    bar = re.search(rf"job {job_id[:8]}: 100%\|█+\| succeeded", shown)  # label, percentage, bar, status
    assert bar, f"no progress bar for job {job_id} in the cell's output:\n{shown}"
    assert "ipywidgets" not in shown, shown
    shown = drawn(outputs[2])
    job2_id = re.search(r"submitted (\w+)", shown).group(1)
    assert re.search(rf"job {job2_id[:8]}: 100%\|█+\| succeeded", shown), shown



async def test_interrupting_wait_in_a_notebook_stops_the_bar_and_says_how_to_cancel(settings, tmp_path, jupyter):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})  # the job stays queued
    cells = [
        """
        from jobqueue import JobQueueClient, ResourceRequests
        client = JobQueueClient()
        job = client.offline_query({"user.id": [1]}, ["user.f0"], resources=ResourceRequests(resource_group="paused"))
        print("submitted", job.id)
        """,
        "job.wait(show_progress=True)",
        "import time; time.sleep(1.5); print(job.status().value)",  # a poller left running would draw here
        "client.close()",
    ]
    outputs = await run_notebook(cells, settings, tmp_path, interrupt=1)
    job_id = re.search(r"submitted (\w+)", drawn(outputs[0])).group(1)
    shown = drawn(outputs[1])
    assert re.search(rf"job {job_id[:8]}:   0%\|\s+\| queued", shown), shown
    assert f"job {job_id[:8]} waits: " in shown, shown  # why it waits (no manager runs), above the bar
    assert f"job {job_id} is still queued; cancel it with `jobqueue cancel {job_id}` or `job.cancel()`" in shown
    assert drawn(outputs[2]) == "queued\n", drawn(outputs[2])
