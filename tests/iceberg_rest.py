"""A minimal Iceberg REST catalog over real pyiceberg metadata, for tests (read-only: config, load table).

It serves the tables of a SqlCatalog through the REST protocol's two read endpoints that pyiceberg's
`RestCatalog.load_table` uses, so the REST client path runs for real without a catalog service.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RestCatalogServer:
    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0].strip("/").split("/")
                owner.requests.append(self.path)
                if path[:2] == ["v1", "config"]:
                    self._reply(200, {"defaults": {}, "overrides": {}})
                elif len(path) == 5 and path[1] == "namespaces" and path[3] == "tables":
                    try:
                        table = owner.catalog.load_table(f"{path[2]}.{path[4]}")
                    except Exception as e:  # the REST error model: pyiceberg maps 404 to NoSuchTableError
                        self._reply(404, {"error": {"message": str(e), "type": "NoSuchTableException", "code": 404}})
                        return
                    self._reply(200, {"metadata-location": table.metadata_location,
                                      "metadata": json.loads(table.metadata.model_dump_json()), "config": {}})
                else:
                    self._reply(404, {"error": {"message": "not served", "type": "NotFound", "code": 404}})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
