"""The Dockerfile: its shape (multi-stage, pinned, non-root, nothing to build with at run time), and its
build stage's install steps, run for real in a fresh venv. No Docker engine runs on these machines."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(DOCKERFILE):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins() -> dict[str, str]:
    """requirements.lock as {canonical name: version}."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[canonical(name.split("[")[0])] = version.strip()
    return pins


def test_the_build_stage_installs_from_the_lock():
    build, _ = stages()
    copied = " ".join(v for k, v in build if k == "COPY")
    runs = " ".join(v for k, v in build if k == "RUN")
    assert "requirements.lock" in copied.split()
    assert '--constraint requirements.lock ".[profiler,s3]"' in runs, "the image's packages are the lock's versions"


def test_the_image_is_multi_stage_pinned_slim_and_non_root():
    build, final = stages()
    (arg,) = [v for k, v in instructions(DOCKERFILE) if k == "ARG" and v.startswith("BASE=")]
    assert re.fullmatch(r"BASE=python:3\.11\.\d+-slim-bookworm", arg), "a pinned Python patch release, slim"
    assert build[0] == ("FROM", "${BASE} AS build") and final[0] == ("FROM", "${BASE}")
    final_text = " ".join(v for _, v in final)
    assert "COPY --from=build /opt/jobqueue /opt/jobqueue" in " ".join(f"{k} {v}" for k, v in final)
    for tool in ("gcc", "build-essential", "make ", "git", "-dev "):
        assert tool not in final_text, f"{tool!r} in the final stage"
    assert "pip uninstall" in final_text
    (user,) = [v for k, v in final if k == "USER"]
    assert user == "10001:10001"
    assert ("ENTRYPOINT", '["jobqueue"]') in final


@pytest.mark.timeout(600)
def test_the_build_stage_installs_a_working_jobqueue_in_a_fresh_venv(tmp_path):
    build, _ = stages()
    venv = tmp_path / "venv"
    env = {**os.environ, "VENV": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    python = Path(sys.base_prefix) / "bin" / "python3"  # the machine's Python, as the base image's `python`
    for kind, args in build:
        if kind != "RUN":
            continue
        command = args.replace("python -m venv", f"{shlex.quote(str(python))} -m venv")
        done = subprocess.run(["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
        assert done.returncode == 0, f"RUN {args}\n{done.stdout}\n{done.stderr}"
    help_text = subprocess.run([venv / "bin" / "jobqueue", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("manager", "consumer", "profiler", "up", "status"):
        assert command in help_text
    imports = "import jobqueue.client, manager.runner, consumer.worker, jobqueue.profiler.daemon"
    subprocess.run([venv / "bin" / "python", "-c", imports], check=True, cwd=tmp_path)
    listing = "import importlib.metadata as m; print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"
    installed = subprocess.run([venv / "bin" / "python", "-c", listing], capture_output=True, text=True, check=True)
    pins = locked_pins()
    for line in installed.stdout.split():
        name, _, version = line.partition("==")
        if canonical(name) != "jobqueue":
            assert pins.get(canonical(name)) == version, f"{name} {version} is not the version requirements.lock pins"
    assert "duckdb" in {canonical(line.partition("==")[0]) for line in installed.stdout.split()}
    assert not (venv / "bin" / "pip").exists(), "no pip left in the image's venv"
    assert not list((venv / "lib").glob("python3*/site-packages/tests")), "tests are not installed"


@pytest.mark.parametrize("with_pip", [False, True])
def test_the_final_stage_removes_pip_where_the_base_has_it_and_builds_on_a_base_without(tmp_path, with_pip):
    """BASE may be python:*-slim (pip installed) or the node tier's debootstrap base (Debian's python3,
    no pip): the final stage's pip step must work on both."""
    _, final = stages()
    (run,) = [v for k, v in final if k == "RUN"]
    (step,) = [part.strip() for part in run.split(" && ") if "pip uninstall" in part]
    venv = tmp_path / "base"
    python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([python, "-m", "venv", *([] if with_pip else ["--without-pip"]), venv], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PIP_CONSTRAINT", None)
    done = subprocess.run(["sh", "-c", step], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{step}\n{done.stderr}"
    assert not list((venv / "lib").glob("python3*/site-packages/pip")), "no pip left in the image"
