"""Bad settings fail a process at start-up, with the variable named, instead of failing later.

Each case starts the real `jobqueue manager` / `jobqueue consumer` command and expects exit code 2
within seconds, and a one-line error naming the variable.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import free_port

NOT_A_DIR = "{tmp}/a-file/spill"  # a path under a regular file: no one, root included, can create it
UNWRITABLE = "/sys/jobqueue-spill"  # sysfs: mkdir is refused even to root


@pytest.mark.parametrize(
    ("command", "env", "variable", "words"),
    [
        ("consumer", {"JOBQUEUE_CONTAINER_MEMORY_BYTES": "-1GiB"}, "JOBQUEUE_CONTAINER_MEMORY_BYTES", "greater than 0"),
        ("consumer", {"JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT": "120"}, "JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT",
         "less than or equal to 100"),
        ("consumer", {"JOBQUEUE_SPILL_DIRECTORY": NOT_A_DIR}, "JOBQUEUE_SPILL_DIRECTORY",
         "is not a writable directory"),
        ("consumer", {"JOBQUEUE_SPILL_DIRECTORY": UNWRITABLE}, "JOBQUEUE_SPILL_DIRECTORY",
         "is not a writable directory"),
        ("consumer", {"JOBQUEUE_REDIS_URL": "redis://127.0.0.1:{port}/0"}, "JOBQUEUE_REDIS_URL", "cannot reach Redis"),
        ("manager", {"JOBQUEUE_REDIS_URL": "redis://127.0.0.1:{port}/0"}, "JOBQUEUE_REDIS_URL", "cannot reach Redis"),
        ("manager", {"JOBQUEUE_MANAGER_TICK_SECONDS": "-1"}, "JOBQUEUE_MANAGER_TICK_SECONDS", "greater than"),
    ],
    ids=["negative-size", "percent-over-100", "spill-not-a-dir", "spill-unwritable", "consumer-no-redis",
         "manager-no-redis", "negative-tick"],
)
def test_bad_settings_fail_fast_naming_the_variable(settings, tmp_path, command, env, variable, words):
    (tmp_path / "a-file").write_text("not a directory")
    env = {k: v.format(tmp=tmp_path, port=free_port()) for k, v in env.items()}
    full_env = {**os.environ, **settings.to_env(), "JOBQUEUE_LOG_FORMAT": "json", **env}
    done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", command], env=full_env, capture_output=True,
                          text=True, timeout=60)
    stderr = " ".join(done.stderr.split())
    assert done.returncode == 2, (done.returncode, stderr)
    assert variable in stderr and words in stderr, stderr
    assert "Traceback" not in done.stderr


def test_manager_port_in_use_is_one_line_naming_the_setting(settings, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **settings.to_env(), "JOBQUEUE_LOG_FORMAT": "json",
               "JOBQUEUE_MANAGER_HTTP_PORT": str(port)}
        done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "manager"], env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "JOBQUEUE_MANAGER_HTTP_PORT" in done.stderr and f"port {port}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "manager started" not in done.stdout + done.stderr


def _one_line_exit_2(command: list[str], env: dict[str, str]) -> str:
    """Run `jobqueue <command>`; it must exit 2 with exactly one line on stderr and no traceback."""
    done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", *command], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "manager started" not in done.stdout + done.stderr and "consumer started" not in done.stderr
    return " ".join(done.stderr.split())


NOT_YAML = "resource_groups:\n  a: [1\n"  # an unclosed list: PyYAML's message spans several lines
WRONG_SHAPE = "resource_groups: 5\n"


@pytest.mark.parametrize(
    ("command", "variable", "content", "words"),
    [
        (["manager"], "JOBQUEUE_RESOURCE_GROUPS_PATH", NOT_YAML, "not valid YAML"),
        (["up"], "JOBQUEUE_RESOURCE_GROUPS_PATH", NOT_YAML, "not valid YAML"),
        (["manager"], "JOBQUEUE_RESOURCE_GROUPS_PATH", WRONG_SHAPE, "expected a mapping"),
        (["up"], "JOBQUEUE_RESOURCE_GROUPS_PATH", WRONG_SHAPE, "expected a mapping"),
        (["manager"], "JOBQUEUE_REGISTRY_PATH", "features: [\n", "not valid YAML"),
        (["consumer"], "JOBQUEUE_REGISTRY_PATH", "features: [\n", "not valid YAML"),
        (["manager"], "JOBQUEUE_SCHEDULES_PATH", "schedules: [\n", "not valid YAML"),
    ],
    ids=["manager-groups-not-yaml", "up-groups-not-yaml", "manager-groups-shape", "up-groups-shape",
         "manager-registry-not-yaml", "consumer-registry-not-yaml", "manager-schedules-not-yaml"],
)
def test_a_broken_config_file_is_one_line_naming_the_file_and_variable(settings, tmp_path, command, variable,
                                                                        content, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    env = {**os.environ, **settings.to_env(), "JOBQUEUE_LOG_FORMAT": "json", variable: str(bad)}
    message = _one_line_exit_2(command, env)
    assert variable in message and str(bad) in message and words in message, message


def test_consumer_port_in_use_is_one_line_naming_the_setting(settings):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **settings.to_env(), "JOBQUEUE_LOG_FORMAT": "json",
               "JOBQUEUE_CONSUMER_HTTP_PORT": str(port)}
        message = _one_line_exit_2(["consumer"], env)
    assert "JOBQUEUE_CONSUMER_HTTP_PORT" in message and f"port {port}" in message, message


def test_embedded_server_that_cannot_start_is_one_line_naming_the_home(settings, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "redis").write_text("a file where the embedded server's data directory goes")
    env = {k: v for k, v in {**os.environ, **settings.to_env()}.items() if k != "JOBQUEUE_REDIS_URL"}
    env.update(JOBQUEUE_HOME=str(home), JOBQUEUE_LOG_FORMAT="json", JOBQUEUE_MANAGER_HTTP_PORT=str(free_port()))
    message = _one_line_exit_2(["up", "--embedded"], env)
    assert "JOBQUEUE_HOME" in message and str(home / "redis") in message, message
    assert not (home / "redis.url").exists()


@pytest.mark.parametrize("kubeconfig", [None, "garbage: [\n"], ids=["no-cluster-config", "kubeconfig-not-yaml"])
def test_kubernetes_backend_without_a_usable_config_is_one_line(settings, tmp_path, kubeconfig):
    env = {k: v for k, v in {**os.environ, **settings.to_env()}.items() if not k.startswith("KUBERNETES_")}
    env.update(JOBQUEUE_LOG_FORMAT="json", JOBQUEUE_SCALER_BACKEND="kubernetes")
    if kubeconfig is not None:
        (tmp_path / "kubeconfig").write_text(kubeconfig)
        env["JOBQUEUE_KUBECONFIG"] = str(tmp_path / "kubeconfig")
    message = _one_line_exit_2(["manager"], env)
    assert "JOBQUEUE_KUBECONFIG" in message and "JOBQUEUE_SCALER_BACKEND=local" in message, message
