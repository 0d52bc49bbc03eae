# One image for `jobqueue manager`, `jobqueue consumer` and `jobqueue profiler` (the Helm chart's image).
#   docker build -t ghcr.io/jobqueue/jobqueue:0.1.0 .
# The build stage's RUN steps are run in a fresh venv by tests/integration/test_dockerfile.py.
# BASE: any Debian bookworm with python3 >= 3.11 as `python` and the venv module. The node tier
# (make test-node) builds from a debootstrap base: tests/k8s/build-node-images.sh.
ARG BASE=python:3.11.11-slim-bookworm

FROM ${BASE} AS build
ARG VENV=/opt/jobqueue
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY jobqueue ./jobqueue
COPY manager ./manager
COPY consumer ./consumer
RUN python -m venv "${VENV}"
# what the package and its profiler and s3 extras need, each at the version pinned in requirements.lock (`make lock`)
RUN "${VENV}/bin/python" -m pip install --quiet --constraint requirements.lock ".[profiler,s3]"
RUN "${VENV}/bin/python" -m pip uninstall --quiet --yes pip setuptools wheel || true
RUN "${VENV}/bin/jobqueue" --help > /dev/null && "${VENV}/bin/py-spy" --version

FROM ${BASE}
# perf for the profiler (Debian's linux-perf: one binary that works across kernels); nothing to build with
RUN apt-get update \
 && apt-get install --yes --no-install-recommends linux-perf \
 && rm -rf /var/lib/apt/lists/* \
 && if python -m pip --version > /dev/null 2>&1; then python -m pip uninstall --quiet --yes pip setuptools wheel; fi \
 && groupadd --gid 10001 jobqueue \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/jobqueue --shell /usr/sbin/nologin jobqueue \
 && install -d -o 10001 -g 10001 /var/lib/jobqueue
COPY --from=build /opt/jobqueue /opt/jobqueue
ENV PATH=/opt/jobqueue/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JOBQUEUE_HOME=/var/lib/jobqueue \
    JOBQUEUE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/jobqueue
ENTRYPOINT ["jobqueue"]
CMD ["--help"]
