"""The registry page: the version new jobs are planned against (who applied it, when, from which file), its
namespaces with their primary keys and features, each feature with its type (a source column, or a windowed
aggregation with its function and window) and source; and the version history, each version a link to the same
page of that version (`/registry/versions/<id>`). Reads through `RegistryStore`, as `GET /v1/registry` does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from jobqueue.api.deps import services
from jobqueue.api.registry import VERSION_PATTERN
from jobqueue.auth.policy import Action
from jobqueue.console.access import require
from jobqueue.console.web import PageError, SignedIn, render
from jobqueue.errors import ConfigError, RegistryVersionNotFound
from jobqueue.registry import Aggregation, FeatureSource, Registry
from jobqueue.registry_versions import RegistryVersion

router = APIRouter(include_in_schema=False)
VersionRef = Annotated[str, Path(pattern=VERSION_PATTERN)]


@dataclass(frozen=True)
class FeatureRow:
    name: str  # `namespace.feature`
    kind: str  # "column" or "aggregation"
    type: str  # what it is: `column amount`, `sum(amount) over 30d`
    source: str  # the source's name and where it reads: `transactions (parquet: /data/txn/*.parquet)`


@dataclass(frozen=True)
class NamespaceView:
    name: str
    primary_key: str
    features: list[FeatureRow]


def _where(source: FeatureSource) -> str:
    place = source.path if source.kind == "parquet" else (source.table or "")
    return f"{source.name} ({source.kind}: {place})"


def _aggregation(a: Aggregation) -> str:
    return f"{a.function}({a.column or '*'}) over {a.window}"


def namespaces_of(registry: Registry) -> list[NamespaceView]:
    """Each namespace of the registry with its features in the order the file gives them. Pure."""
    views = []
    for name, ns in sorted(registry.namespaces.items()):
        rows = []
        for source in ns.sources:
            rows += [FeatureRow(f"{name}.{feature}", "column", f"column {column}", _where(source))
                     for feature, column in source.features.items()]
            rows += [FeatureRow(f"{name}.{feature}", "aggregation", _aggregation(agg), _where(source))
                     for feature, agg in source.aggregations.items()]
        views.append(NamespaceView(name, ns.primary_key, rows))
    return views


async def _page(request: Request, session: SignedIn, ref: str | None) -> Response:
    svc = await services(request)
    require(session.identity, Action.READ_REGISTRY, svc)
    store = svc.client.registries
    current_id = await store.current_id()
    shown: RegistryVersion | None
    if ref is None:
        shown = await store.current()
    else:
        try:
            shown = await store.version(ref)
        except RegistryVersionNotFound as e:
            raise PageError(404, str(e)) from None
    namespaces, problem = [], None
    if shown is not None:
        try:
            namespaces = namespaces_of(shown.registry())
        except ConfigError as e:  # stored by an older version with other rules: say so, show the history
            problem = str(e)
    history = list(reversed(await store.history()))  # newest first
    return render(request, "registry.html", session, shown=shown, current_id=current_id, namespaces=namespaces,
                  problem=problem, history=history)


@router.get("/registry")
async def registry_page(request: Request, session: SignedIn) -> Response:
    return await _page(request, session, None)


@router.get("/registry/versions/{version}")
async def registry_version_page(request: Request, version: VersionRef, session: SignedIn) -> Response:
    return await _page(request, session, version)
