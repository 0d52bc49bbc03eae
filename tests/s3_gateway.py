"""A checking gateway in front of moto's S3 for presigned URLs: moto's server checks neither the signature nor the
expiry of a presigned (query-signed) request, so tests send the URLs the API hands out through this, which checks
both as S3 does (SigV4 query auth recomputed with botocore over the signed headers; `X-Amz-Date` + `X-Amz-Expires`
against the clock), answers 403 like S3 when one fails, and forwards the request to moto otherwise.

    with presign_checking_gateway(s3_endpoint, secret="test") as gateway:
        url = gateway.route(presigned_url)      # same path and query, the gateway's host
        httpx.put(url, content=body, headers=ticket["headers"])   # 403 when expired, or another size is sent
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class Gateway:
    def __init__(self, upstream: str, server: ThreadingHTTPServer) -> None:
        self.upstream = upstream
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.refused: list[str] = []  # why each refused request was refused

    def route(self, presigned: str) -> str:
        parts = urlsplit(presigned)
        return urlunsplit(parts._replace(netloc=urlsplit(self.url).netloc))


def _refusal(query: dict[str, str], headers: dict[str, str], method: str, path: str, raw_query: str,
             upstream_host: str, secret: str) -> str | None:
    """Why S3 would refuse this presigned request; None when it would take it."""
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if datetime.now(UTC) > signed_at + timedelta(seconds=int(query["X-Amz-Expires"])):
        return "AccessDenied: Request has expired"
    access_key, _, region, service, _ = query["X-Amz-Credential"].split("/")
    signed = query["X-Amz-SignedHeaders"].split(";")
    lower = {k.lower(): v for k, v in headers.items()}
    lower["host"] = upstream_host  # the URL was signed for the store's host; the gateway stands in for it
    if any(name not in lower for name in signed):
        return f"SignatureDoesNotMatch: a signed header is missing ({signed})"
    unsigned_query = "&".join(p for p in raw_query.split("&") if not p.startswith("X-Amz-Signature="))
    request = AWSRequest(method=method, url=f"http://{upstream_host}{path}?{unsigned_query}",
                         headers={name: lower[name] for name in signed})
    request.context["timestamp"] = query["X-Amz-Date"]
    auth = S3SigV4QueryAuth(Credentials(access_key, secret), service, region, expires=int(query["X-Amz-Expires"]))
    canonical = auth.canonical_request(request)
    if auth.signature(auth.string_to_sign(request, canonical), request) != query["X-Amz-Signature"]:
        return "SignatureDoesNotMatch"
    return None


@contextlib.contextmanager
def presign_checking_gateway(upstream: str, secret: str) -> Iterator[Gateway]:
    upstream_host = urlsplit(upstream).netloc
    forward = httpx.Client(base_url=upstream, timeout=60)
    holder: list[Gateway] = []

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            gateway = holder[0]
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            why = "AccessDenied: not a presigned request" if "X-Amz-Signature" not in query else _refusal(
                query, dict(self.headers.items()), self.command, parts.path, parts.query, upstream_host, secret)
            if why is not None:
                gateway.refused.append(why)
                payload = f"<Error><Code>{why.split(':')[0]}</Code><Message>{why}</Message></Error>".encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            got = forward.request(self.command, f"{parts.path}?{urlencode(list(query.items()))}", content=body,
                                  headers=headers)
            self.send_response(got.status_code)
            for k, v in got.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(got.content)))
            self.end_headers()
            self.wfile.write(got.content)

        do_GET = do_PUT = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Gateway(upstream, server))
    thread = threading.Thread(target=server.serve_forever, name="s3-gateway", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        forward.close()
