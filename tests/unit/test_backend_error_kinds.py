"""`jobqueue_backend_errors_total{kind}` is a closed set: a failed backend call maps to one of its kinds."""

from __future__ import annotations

import errno

import pytest
from prometheus_client import generate_latest

from manager.metrics import BackendErrorKind, ManagerMetrics, backend_error_kind


def kubernetes_errors() -> list[tuple[BaseException, BackendErrorKind]]:
    """The Kubernetes client's own errors, when it is installed (the `kubernetes` extra)."""
    try:
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException
    except ImportError:
        return []
    return [(ApiException(status=409, reason="Conflict"), BackendErrorKind.API),
            (aiohttp.ClientConnectionError("refused"), BackendErrorKind.UNREACHABLE)]


@pytest.mark.parametrize(("error", "kind"), [
    (TimeoutError(), BackendErrorKind.UNREACHABLE),
    (ConnectionRefusedError(), BackendErrorKind.UNREACHABLE),
    (ValueError("resource group 'x': no image"), BackendErrorKind.INVALID),
    (OSError(errno.EAGAIN, "fork failed"), BackendErrorKind.OS),
    (RuntimeError("surprise"), BackendErrorKind.OTHER),
    *kubernetes_errors(),
])
def test_each_failed_backend_call_has_one_kind_of_the_closed_set(error, kind):
    assert backend_error_kind(error) is kind


def test_every_kind_has_a_zero_sample_before_any_error_and_counts_the_first():
    metrics = ManagerMetrics()
    metrics.serve_backend("kubernetes")
    page = generate_latest(metrics.registry).decode()
    for kind in BackendErrorKind:
        assert f'jobqueue_backend_errors_total{{backend="kubernetes",kind="{kind}"}} 0.0' in page.splitlines()
    metrics.backend_error("kubernetes", TimeoutError())
    page = generate_latest(metrics.registry).decode()
    assert 'jobqueue_backend_errors_total{backend="kubernetes",kind="unreachable"} 1.0' in page.splitlines()
