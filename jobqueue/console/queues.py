"""The queues page: one row per resource group (what `jobqueue status` shows: ready, held, in flight, deferred, the
oldest ready job's wait, consumers desired, ready and busy, min/max, the manager's decision and its last change of
consumers, any config error), with sparklines of the queue depth and the consumers over the last hour from the
samples the manager keeps (`jobqueue.group_samples`). It refreshes itself every few seconds (htmx) and reads
without JavaScript. `/groups`, the page's first name, shows the same."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from jobqueue.api.deps import services
from jobqueue.api.wire import HELD_MEANING, GroupStatus
from jobqueue.auth.policy import Action
from jobqueue.console.access import require
from jobqueue.console.sparkline import Sparkline, sparkline
from jobqueue.console.web import SignedIn, here, render
from jobqueue.direct_backend import DirectBackend
from jobqueue.group_samples import recent_samples

router = APIRouter(include_in_schema=False)
REFRESH_SECONDS = 5


@dataclass(frozen=True)
class QueueRow:
    group: GroupStatus
    depth: Sparkline
    consumers: Sparkline


@router.get("/queues")
@router.get("/groups")
async def queues_page(request: Request, session: SignedIn) -> Response:
    svc = await services(request)
    require(session.identity, Action.READ_STATUS, svc)
    client = svc.client
    groups = await DirectBackend(client).groups()
    now = time.time()
    with client.reaching_redis("the queues' history is unknown"):
        history = await recent_samples(client.redis, client.keys, [g.group for g in groups], now)
    rows = [QueueRow(g,
                     sparkline(history[g.group], lambda s: s.depth, now, f"queue depth of {g.group} (held included)"),
                     sparkline(history[g.group], lambda s: s.consumers, now, f"consumers of {g.group}"))
            for g in groups]
    return render(request, "queues.html", session, rows=rows, live_url=here(request), refresh=REFRESH_SECONDS,
                  stale=bool(groups) and groups[0].manager_stale, held_meaning=HELD_MEANING)
