"""The console's home: `/` goes to the jobs table. The pages themselves have their own modules: `jobs_list` (the jobs
table), `job_page` (one job), `queues`, `schedules_page` and `registry_page`; each reads through the API's own
functions and policy, so a page shows what the API would."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from jobqueue.console.web import redirect

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home() -> Response:
    return redirect("/jobs")
