"""The console's jobs table: filters (owner, team, state, group, tag, query name, submission window), server-side
cursor pages, sorting by submission, wait and duration (plain links: no JavaScript needed), and cancelling every
job the filters match after a confirmation page that shows how many that is. It runs the API's own listing
(`jobqueue.api.jobs.listing_query`, the planner of `jobqueue.listing_plan`) under the API's policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from jobqueue.api.deps import Services, allow, audit, may, services
from jobqueue.api.jobs import listing_query, listing_scope
from jobqueue.api.listing import CURSOR_PATTERN, cancellable_queries, count_matching, find_page
from jobqueue.api.wire import CancelFilter
from jobqueue.auth.identity import Role
from jobqueue.auth.policy import Action
from jobqueue.console import views
from jobqueue.console.sessions import Session
from jobqueue.console.web import PageError, SignedIn, form_fields, here, redirect, render, require_csrf
from jobqueue.direct_backend import DirectBackend
from jobqueue.job_filter import JobFilter
from jobqueue.listing_plan import ListingQuery, SortKey
from jobqueue.models import JobStatus

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
FILTERS = ("owner", "team", "state", "resource_group", "tag", "query_name", "submitted_after", "submitted_before")
# the listing's alone (not a bulk cancel's: a sharded query is cancelled whole, through its parent): by default a
# sharded query is one row, its parent; `parent` lists its shards (its page does too), `include_shards` every job's
LIST_FILTERS = (*FILTERS, "parent", "include_shards")
YES = ("1", "true", "on", "yes")
Text = Annotated[str | None, Query(max_length=200)]
Cursor = Annotated[str | None, Query(pattern=CURSOR_PATTERN)]
BULK = "/jobs/bulk-cancel"


@dataclass(frozen=True)
class Chosen:
    """The filters of a page as given (the text to show again and to carry in links) and as a listing filter."""

    given: dict[str, str]
    wanted: JobFilter
    after: datetime | None
    before: datetime | None


def _time(name: str, text: str | None) -> datetime | None:
    """A time from a filter field: ISO 8601, or a browser's `datetime-local` value (no zone: UTC)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PageError(400, f"{name} {text!r} is not a time; use YYYY-MM-DDTHH:MM (UTC)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def chosen_filters(values: dict[str, str | None], names: tuple[str, ...] = FILTERS) -> Chosen:
    given = {name: v.strip() for name in names if (v := values.get(name)) and v.strip()}
    if given.get("include_shards", "1").lower() not in YES:
        given.pop("include_shards")
    try:
        state = JobStatus(given["state"]) if "state" in given else None
    except ValueError:
        raise PageError(400, f"state {given['state']!r} is not one of "
                        f"{', '.join(s.value for s in JobStatus)}") from None
    tags: dict[str, str] = {}
    if "tag" in given:
        name, eq, value = given["tag"].partition("=")
        if not eq or not name.strip():
            raise PageError(400, f"tag {given['tag']!r} is not NAME=VALUE")
        tags[name.strip()] = value.strip()
    wanted = JobFilter(group=given.get("resource_group"), state=state, owner=given.get("owner"),
                       team=given.get("team"), query_name=given.get("query_name"), tags=tags,
                       parent=given.get("parent"), shards="include_shards" in given)
    return Chosen(given, wanted, _time("submitted_after", given.get("submitted_after")),
                  _time("submitted_before", given.get("submitted_before")))


def sort_links(given: dict[str, str], sort: SortKey, order: str) -> dict[str, dict[str, str]]:
    """For each sortable column: the link that sorts by it (the other way round when it is the current sort),
    and the `aria-sort` value of its header."""
    links = {}
    for key in SortKey:
        current = key is sort
        flip = "asc" if current and order == "desc" else "desc"
        links[key.value] = {"url": "/jobs?" + urlencode({**given, "sort": key.value, "order": flip}),
                            "aria": ("descending" if order == "desc" else "ascending") if current else "none"}
    return links


@router.get("/jobs")
async def jobs_page(request: Request, session: SignedIn, owner: Text = None, team: Text = None, state: Text = None,
                    resource_group: Text = None, tag: Text = None, query_name: Text = None,
                    submitted_after: Text = None, submitted_before: Text = None, sort: SortKey = SortKey.SUBMITTED,
                    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc", cursor: Cursor = None,
                    cancelled: Annotated[int | None, Query(ge=0)] = None, parent: Text = None,
                    include_shards: Text = None) -> Response:
    svc = await services(request)
    identity = session.identity
    allow(identity, Action.LIST_JOBS, svc)
    chosen = chosen_filters(dict(request.query_params), LIST_FILTERS)
    query = listing_query(identity, svc, chosen.wanted, chosen.after, chosen.before, sort, order, cursor, PAGE_SIZE)
    client = svc.client
    records, next_cursor = await find_page(client.store, client.redis, client.keys, query,
                                           lambda r: may(identity, Action.READ_JOB, r, svc),
                                           svc.settings.api_list_scan_limit)
    now = datetime.now(UTC)
    rows = [(r, views.wait_seconds(r, now), views.run_seconds(r, now)) for r in records]
    ordering = {"sort": sort.value, "order": order} if (sort, order) != (SortKey.SUBMITTED, "desc") else {}
    next_url = "/jobs?" + urlencode({**chosen.given, **ordering, "cursor": next_cursor}) if next_cursor else None
    first_url = "/jobs?" + urlencode({**chosen.given, **ordering}) if cursor else None
    follow: dict[str, str] = {"ids": ",".join(r.job_id for r in records),
                              "states": ",".join(r.status.value for r in records)} if records else {}
    if cursor is None and sort is SortKey.SUBMITTED and order == "desc":  # a new submission would show at the top
        follow["new"] = "1"
    live_src = "/live/jobs?" + urlencode(follow) if follow else None
    return render(request, "jobs.html", session, rows=rows, chosen=chosen.given, states=list(JobStatus),
                  next_url=next_url, first_url=first_url, live_url=here(request), live_src=live_src,
                  filtered=bool(chosen.given),
                  sees_everyone=identity.role is not Role.USER, sorts=sort_links(chosen.given, sort, order),
                  sort=sort.value, order=order, cancelled=cancelled,
                  bulk_url=BULK + "?" + urlencode(bulk) if (bulk := {k: v for k, v in chosen.given.items()
                                                                     if k in FILTERS}) else None)


def _cancel_filter(chosen: Chosen) -> CancelFilter:
    w = chosen.wanted
    given = {"owner": w.owner, "team": w.team, "state": w.state, "resource_group": w.group, "tags": w.tags or None,
             "query_name": w.query_name, "submitted_after": chosen.after, "submitted_before": chosen.before}
    return CancelFilter.model_validate({k: v for k, v in given.items() if v is not None})  # null is refused


async def _cancellable(session: Session, svc: Services, chosen: Chosen) -> int:
    """How many queued or running jobs the filters match that the signed-in identity may cancel."""
    identity, client = session.identity, svc.client
    query = listing_query(identity, svc, chosen.wanted, chosen.after, chosen.before)
    # the indexes decide alone: the policy's scope is theirs too (a user's own jobs, and their team's when users see
    # them), and a user may cancel what they may see
    queries: list[ListingQuery] = cancellable_queries(query)
    return sum([await count_matching(client.store, client.redis, client.keys, q, None) for q in queries])


def _need_filters(chosen: Chosen) -> None:
    if not chosen.given:
        raise PageError(400, "choose at least one filter before cancelling the jobs it matches")


@router.get(BULK)
async def confirm_bulk_cancel(request: Request, session: SignedIn, owner: Text = None, team: Text = None,
                              state: Text = None, resource_group: Text = None, tag: Text = None,
                              query_name: Text = None, submitted_after: Text = None,
                              submitted_before: Text = None) -> Response:
    svc = await services(request)
    allow(session.identity, Action.CANCEL_MANY, svc)
    chosen = chosen_filters(dict(request.query_params))
    _need_filters(chosen)
    count = await _cancellable(session, svc, chosen)
    return render(request, "bulk_cancel.html", session, chosen=chosen.given, count=count,
                  back_url="/jobs?" + urlencode(chosen.given))


@router.post(BULK)
async def bulk_cancel(request: Request, session: SignedIn) -> Response:
    form = await form_fields(request)
    require_csrf(session, form)
    svc = await services(request)
    identity = session.identity
    allow(identity, Action.CANCEL_MANY, svc)
    values: dict[str, Any] = dict(form)
    chosen = chosen_filters(values)
    _need_filters(chosen)
    done = await DirectBackend(svc.client).cancel_many(
        _cancel_filter(chosen), lambda r: may(identity, Action.CANCEL_JOB, r, svc), *listing_scope(identity, svc))
    svc.metrics.cancelled.labels(svc.metrics.team(identity.team)).inc(done.cancelled)
    audit(identity, Action.CANCEL_MANY, job_ids=done.job_ids, count=done.cancelled, filter=chosen.given,
          via="console")
    return redirect("/jobs?" + urlencode({**chosen.given, "cancelled": done.cancelled}))
