"""Serving the API with uvicorn: in the foreground (`jobqueue api`) or in a thread next to the manager
(`jobqueue up`, tests). The socket is bound here, so a port of 0 (any free one) is known before it serves."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from jobqueue.api.app import create_app
from jobqueue.engine.resources import container_cpus, threads_for
from jobqueue.errors import SettingsError
from jobqueue.logs import configure_logging
from jobqueue.settings import Settings, load_settings

START_TIMEOUT = 30.0


def bind(host: str, port: int, fallback_to_free: bool = False) -> socket.socket:
    """A listening socket on (host, port); with `fallback_to_free`, any free port when that one is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        if not fallback_to_free or port == 0:
            sock.close()
            raise SettingsError(f"the API cannot listen on {host}:{port} ({e.strerror}); set JOBQUEUE_API_PORT to a "
                                "free port (0: any)", ("JOBQUEUE_API_PORT", "JOBQUEUE_API_HOST")) from None
        sock.bind((host, 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# uvicorn picks uvloop and httptools (dependencies) over asyncio's loop and h11 when they import
OPTIONS: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": "on", "timeout_graceful_shutdown": 10}


def _server(settings: Settings, own_process: bool = False) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(create_app(settings, own_process=own_process), **OPTIONS))


def app_from_environment() -> FastAPI:
    """The app of one worker process (`JOBQUEUE_API_WORKERS` > 1): its settings from the environment, as the
    parent's (`jobqueue api` reads nothing else)."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings, own_process=True)


MAX_DEFAULT_WORKERS = 4  # each worker holds its own heap (~150 MiB) and connections: past a few, add replicas


def worker_count(configured: int | None, cpus: float) -> int:
    """JOBQUEUE_API_WORKERS when set, else one per whole CPU the process may use, 1 to MAX_DEFAULT_WORKERS."""
    return configured if configured is not None else min(MAX_DEFAULT_WORKERS, threads_for(cpus))


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM (`jobqueue api`): in this process, or in JOBQUEUE_API_WORKERS worker
    processes sharing the socket bound here (uvicorn's supervisor restarts one that dies)."""
    sock = bind(settings.api_host, settings.api_port)
    workers = worker_count(settings.api_workers, container_cpus()[0])
    if workers <= 1:
        _server(settings, own_process=True).run(sockets=[sock])
        return
    config = uvicorn.Config(f"{__name__}:{app_from_environment.__name__}", factory=True, workers=workers, **OPTIONS)
    Multiprocess(config, sockets=[sock]).run()


@contextlib.contextmanager
def api_in_thread(settings: Settings, port: int | None = None, fallback_to_free: bool = False) -> Iterator[str]:
    """The API served from a thread of this process while the block runs; yields its URL."""
    sock = bind(settings.api_host, settings.api_port if port is None else port, fallback_to_free)
    server = _server(settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="jobqueue-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:  # uvicorn has no start event: its flag, checked until it is up or gone
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start (see the log above)")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT)
        sock.close()


@contextlib.contextmanager
def recorded_api_url(path: Path, url: str) -> Iterator[None]:
    """`url` written to `path` (`<home>/api.url`, next to `redis.url`) while the block runs, for clients on this
    machine; removed after unless another instance has written its own since."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(url + "\n")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == url:
                path.unlink()
