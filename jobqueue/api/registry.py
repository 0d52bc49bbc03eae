"""`/v1/registry`: the registry the service plans against. Read the current version, the history and one version
(every role); apply a new version (admin), from a registry file's YAML or its JSON form:

    curl -X POST "$URL/v1/registry?origin=registry.yaml" -H "Authorization: Bearer $ADMIN" \\
         -H "Content-Type: application/yaml" --data-binary @registry.yaml

Relative local paths in an applied body are taken against `/` (the server has no idea of the caller's directory):
the SDK and `jobqueue registry apply --api-url` make them absolute against the file's directory before sending.
"""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Request

from jobqueue.api.deps import ApiError, Caller, Svc, allow, audit
from jobqueue.api.responses import ERRORS, SUBMIT_ERRORS
from jobqueue.api.submit import read_body
from jobqueue.api.wire import RegistryApplied, RegistryHistory, RegistryVersionBody
from jobqueue.auth.policy import Action
from jobqueue.errors import ConfigError, InvalidQueryError, RegistryVersionNotFound
from jobqueue.registry import parse_registry
from jobqueue.registry_versions import parse_version_ref

VERSION_PATTERN = r"^[1-9][0-9]{0,17}(-[0-9a-f]{12})?$"  # what `parse_version_ref` takes
router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=ERRORS)
JSON_TYPE, YAML_TYPES = "application/json", ("application/yaml", "application/x-yaml", "text/yaml")
BODY = {"required": True, "description": "A registry file (`namespaces: {name: {primary_key, sources}}`) as YAML, "
        "or the same document as JSON.",
        "content": {JSON_TYPE: {"schema": {"type": "object"}},
                    **{t: {"schema": {"type": "string"}} for t in YAML_TYPES}}}


@router.get("", response_model=RegistryVersionBody, summary="The current registry version and its content.")
async def current_registry(identity: Caller, svc: Svc) -> RegistryVersionBody:
    allow(identity, Action.READ_REGISTRY, svc)
    current = await svc.client.registries.current()
    if current is None:
        raise ApiError(404, "no registry version is stored yet: an admin applies one (`jobqueue registry apply "
                       "<file>`, or `jobqueue up` with JOBQUEUE_REGISTRY_PATH)", reason="no_registry")
    return RegistryVersionBody.of(current, current.id)


@router.get("/versions", response_model=RegistryHistory, summary="Every registry version, oldest first.")
async def registry_history(identity: Caller, svc: Svc) -> RegistryHistory:
    allow(identity, Action.READ_REGISTRY, svc)
    store = svc.client.registries
    versions, current = await store.history(), await store.current_id()
    return RegistryHistory(current=current,
                           versions=[RegistryVersionBody.of(v, current, document=False) for v in versions])


@router.get("/versions/{version}", response_model=RegistryVersionBody,
            summary="One registry version, by number (3) or id (3-9f8e7d6c5b4a).")
async def registry_version(version: Annotated[str, Path(pattern=VERSION_PATTERN, description="A version number "
                                                       "or id.")], identity: Caller, svc: Svc) -> RegistryVersionBody:
    allow(identity, Action.READ_REGISTRY, svc)
    try:
        parse_version_ref(version)
    except ValueError as e:
        raise InvalidQueryError("version", str(e)) from None
    store = svc.client.registries
    try:
        found = await store.version(version)
    except RegistryVersionNotFound as e:
        raise ApiError(404, str(e), reason="no_version") from None
    return RegistryVersionBody.of(found, await store.current_id())


def parse_body(body: bytes, content_type: str, origin: str) -> Any:
    media = content_type.split(";")[0].strip().lower()
    if media == JSON_TYPE:
        try:
            return json.loads(body)
        except ValueError as e:
            raise ApiError(400, f"{origin}: the body is not JSON: {e}", field="body") from None
    if media in YAML_TYPES:
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as e:
            raise InvalidQueryError("body", f"{origin}: not valid YAML: {e}") from None
    raise ApiError(415, f"Content-Type {media or '(none)'!r} is not a registry; send {JSON_TYPE} or "
                   f"{YAML_TYPES[0]}", field="Content-Type", reason="unsupported_media_type")


@router.post("", response_model=RegistryApplied, summary="Apply a registry as the new current version (admin).",
             responses=SUBMIT_ERRORS, openapi_extra={"requestBody": BODY})
async def apply_registry(
    request: Request, identity: Caller, svc: Svc,
    origin: Annotated[str, Query(max_length=500, description="The file it comes from, named in errors and in "
                                 "the history.")] = "request body",
) -> RegistryApplied:
    """Validates the registry (422 naming the file, the namespace and the field; nothing stored) and stores it as
    the next version. Content equal to the current version's stores nothing (`created` false)."""
    allow(identity, Action.APPLY_REGISTRY, svc)
    data = parse_body(await read_body(request, svc.settings.api_max_body_bytes),
                      request.headers.get("content-type", ""), origin)
    try:
        registry = parse_registry(data, FilePath("/"), origin)
    except ConfigError as e:
        raise InvalidQueryError("body", str(e)) from None
    except (TypeError, ValueError, AttributeError) as e:  # a shape parse_registry does not expect (a number as path)
        raise InvalidQueryError("body", f"{origin}: not a registry: {e}") from None
    applied = await svc.client.registries.apply(registry, applied_by=f"{identity.owner} (API)")
    audit(identity, Action.APPLY_REGISTRY, registry_version=applied.version.id, created=applied.created,
          origin=origin)
    return RegistryApplied(created=applied.created, version=RegistryVersionBody.of(applied.version, applied.version.id))
