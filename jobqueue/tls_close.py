"""aiohttp connectors that close every TLS socket they drop: the SDK's API transport and the manager's
Kubernetes client.

Before Python 3.12.8 (the image runs 3.11) asyncio keeps a TLS connection's socket until the peer answers the close
handshake (cpython#118960, fixed in 3.12.8 and 3.13.1), and aiohttp's close does not wait for a connection it had
already dropped. So a connection dropped mid-response (a read that timed out, a cancelled download, the manager's
Deployment watch when it stops) kept its socket until the garbage collector closed it, with a ResourceWarning, once
the event loop had ended: every time for an SDK read timeout over https, 17 times in 20 for a stopped watch
(/tmp probes), and it failed CI's apiserver tier once.

aiohttp's `enable_cleanup_closed` aborts such sockets every 2 s and when the connector closes. Neither
kubernetes_asyncio nor httpx_aiohttp gives a way to pass it, so `close_dropped_tls` switches it on in the connector
they made (two private names of aiohttp's TCPConnector, pinned by requirements.lock and checked by the tests that
drop connections), only where aiohttp says it is needed: on a fixed Python it ignores the option, with a warning.
"""

from __future__ import annotations

from aiohttp import BaseConnector, TCPConnector
from aiohttp.connector import NEEDS_CLEANUP_CLOSED


def close_dropped_tls(connector: BaseConnector | None) -> None:
    """Make `connector` abort the TLS sockets it drops (every 2 s, and when it closes), as
    `TCPConnector(enable_cleanup_closed=True)` would have."""
    if NEEDS_CLEANUP_CLOSED and isinstance(connector, TCPConnector) and connector._cleanup_closed_disabled:
        connector._cleanup_closed_disabled = False
        connector._cleanup_closed()  # aborts what it holds (nothing yet) and starts its 2-s timer
