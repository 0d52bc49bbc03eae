"""`/v1/registry` over a served API: an admin applies YAML or JSON (a new version, or the current one unchanged);
bad input is a 422 naming the file, the namespace and the field, and stores nothing; every role reads the current
version, the history and one version; the audit line names the version."""

from __future__ import annotations

import httpx
import yaml

from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.registry import load_registry
from jobqueue.registry_versions import document_of
from tests.api_support import bearer, make_token


async def test_apply_and_read_registry_versions(settings):
    admin = bearer(await make_token(settings, "adam", Role.ADMIN, "platform"))
    user = bearer(await make_token(settings, "alice", Role.USER, "risk"))
    document = document_of(load_registry(settings.registry_path))
    renamed = yaml.safe_load(yaml.safe_dump(document))
    ns = next(iter(renamed["namespaces"].values()))
    ns["sources"][0]["features"] = {f"{k}_v2": v for k, v in ns["sources"][0]["features"].items()}
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            none = await http.get("/v1/registry", headers=user)
            assert none.status_code == 404 and "no registry version" in none.json()["detail"]
            first = await http.post("/v1/registry", headers=admin, json=document, params={"origin": "reg.yaml"})
            assert first.status_code == 200, first.text
            assert first.json()["created"] is True and first.json()["version"]["version"].startswith("1-")
            again = await http.post("/v1/registry", headers={**admin, "content-type": "application/yaml"},
                                    content=yaml.safe_dump(document))
            assert again.json() == {**first.json(), "created": False}, again.text
            second = await http.post("/v1/registry", headers={**admin, "content-type": "application/yaml"},
                                     content=yaml.safe_dump(renamed), params={"origin": "v2.yaml"})
            v2 = second.json()["version"]
            assert second.json()["created"] and v2["number"] == 2 and v2["origin"] == "v2.yaml"

            name = next(iter(document["namespaces"]))
            bad = {"namespaces": {name: {**document["namespaces"][name], "primary_key": 5}}}
            refused = await http.post("/v1/registry", headers=admin, json=bad, params={"origin": "bad.yaml"})
            assert refused.status_code == 422 and refused.json()["field"] == "body", refused.text
            assert refused.json()["detail"].startswith(f"body: bad.yaml: namespace {name!r}: primary_key"), \
                refused.text
            garbled = await http.post("/v1/registry", headers={**admin, "content-type": "application/yaml"},
                                      content=b"namespaces: [\n")
            assert garbled.status_code == 422 and "not valid YAML" in garbled.json()["detail"]
            assert (await http.post("/v1/registry", headers=user, json=document)).status_code == 403

            current = (await http.get("/v1/registry", headers=user)).json()
            assert current["version"] == v2["version"] and current["document"] == renamed and current["current"]
            history = (await http.get("/v1/registry/versions", headers=user)).json()
            assert history["current"] == v2["version"]
            assert [v["number"] for v in history["versions"]] == [1, 2]
            assert all(v["document"] is None for v in history["versions"])
            one = (await http.get(f"/v1/registry/versions/{first.json()['version']['version']}", headers=user))
            assert one.json()["document"] == document and one.json()["current"] is False
            assert (await http.get("/v1/registry/versions/7", headers=user)).status_code == 404
            wrong = await http.get("/v1/registry/versions/0", headers=user)
            assert wrong.status_code == 422 and wrong.json()["field"] == "version"
