# syntax=docker/dockerfile:1
# The cdc daemon as a container image: `cdc run` as a non-root user, configured by YAML files
# under /app (defaults baked in from config/ and connectors/; mount your own over them).
#
#   docker build -t cdc .
#   docker run --stop-timeout 40 \
#     -v "$PWD/config:/app/config:ro" -v "$PWD/connectors:/app/connectors:ro" \
#     -e KAFKA_BOOTSTRAP_SERVERS -e INVENTORY_PG_PASSWORD cdc
#
# Stopping: SIGTERM makes the daemon flush Kafka (up to 30 s) and confirm the slot, then exit
# 0. Docker's default grace period is 10 s, after which it sends SIGKILL: nothing is lost
# then, but the changes since the last confirmation are sent again on restart. Give it
# --stop-timeout 40 (compose: stop_grace_period: 40s; Kubernetes:
# terminationGracePeriodSeconds: 40).
#
# The image runs the compiled core (native/, built in the native stage below); -e CDC_NATIVE=0
# forces the pure-Python path (the same output, slower).
#
# No HEALTHCHECK: the metrics port is configurable (and may be disabled), and Kubernetes
# ignores HEALTHCHECK anyway; probe http://<pod>:9187/metrics (cdc_connector_up) instead.

ARG PYTHON_IMAGE=python:3.11-slim
# Debian 12 (bookworm) on purpose, not rust:1-slim (now trixie): see the native stage.
ARG RUST_IMAGE=rust:1-slim-bookworm

# --- build: the cdc wheel plus a wheel of every dependency ----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from (pyproject's readme is README.md), so editing tests or
# docs does not rebuild this layer.
COPY pyproject.toml README.md ./
COPY cdc/ cdc/
# psycopg[binary], confluent-kafka, orjson and pydantic-core ship manylinux wheels for
# amd64 and arm64: no compiler is needed here or in the runtime stage (the one compiled
# part, native/, has a stage of its own).
RUN pip wheel --wheel-dir /wheels .

# --- native: the compiled core's wheel (cdc-native, Rust + PyO3) ----------------------
# Why a stage: native/ needs cargo with Rust >= 1.85 (pyo3 0.30), which neither Debian's
# rustc (1.63 in Debian 12) nor the Python image has; the official Rust image brings it
# (rustup's install script is not used). Only the wheel leaves this stage, so the toolchain
# (several hundred MB) never reaches the runtime image. BuildKit runs this stage and the
# build stage in parallel.
# The wheel is abi3 (pyo3's abi3-py311): tagged cp311-abi3, it loads in any CPython >= 3.11,
# so maturin only needs an interpreter >= 3.11: Debian 12's python3 is 3.11, the runtime's
# version. Its platform tag is the glibc it linked against (bookworm's 2.36 gives
# manylinux_2_34), and pip refuses it on an older glibc: hence bookworm, which is not newer
# than the python:3.11-slim images (bookworm or trixie).
FROM ${RUST_IMAGE} AS native
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# maturin in a venv: Debian's python3 refuses a pip install outside one (PEP 668). The
# same range as native/pyproject.toml's build-system requires.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install "maturin>=1.9,<2"
WORKDIR /src
# Only what the wheel is built from (scripts/bootstrap hashes the same files).
COPY native/Cargo.toml native/Cargo.lock native/pyproject.toml native/
COPY native/src/ native/src/
# --locked: exactly the crate versions of Cargo.lock.
RUN /opt/maturin/bin/maturin build --release --locked -m native/Cargo.toml \
      -i /opt/maturin/bin/python -o /wheels

# --- runtime: the wheels installed into a slim Python, nothing else -------------------
FROM ${PYTHON_IMAGE} AS runtime
# Label only; docker build --build-arg VERSION=$(git describe) to match a release.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cdc" \
      org.opencontainers.image.description="Change-data-capture daemon: PostgreSQL logical replication (pgoutput) to Kafka retention and compacted topics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# CDC_METRICS_HOST: config/cdc.yaml binds the metrics endpoint to it; inside a container
# it must listen on all interfaces for the published port 9187 to reach it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDC_METRICS_HOST=0.0.0.0 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# The wheels are bind-mounted from the build and native stages, not copied: they never
# become a layer of this image. --no-index: exactly the versions the build stage resolved
# (the wheel file pins cdc itself, so no version to keep in step with pyproject.toml here).
# cdc does not depend on cdc-native (without it cdc runs its pure-Python path), so its
# wheel is named here, and the build fails rather than ship an image whose compiled core
# does not load.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=native,source=/wheels,target=/native-wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels \
      /wheels/cdc-*.whl /native-wheels/cdc_native-*.whl \
 && python -c 'import sys, cdc.native as n; sys.exit(None if n.ACTIVE else n.native_core_status())' \
 && groupadd --system --gid 10001 cdc \
 && useradd --system --uid 10001 --gid cdc --no-create-home --shell /usr/sbin/nologin cdc
WORKDIR /app
# Defaults, owned by root and read-only for the daemon.
COPY config/ /app/config/
COPY connectors/ /app/connectors/
# The one place the daemon writes: toast.mode: fill keeps its store here
# (state/<connector>.toast.sqlite3). Mount a volume on it to keep the store across
# container restarts.
RUN mkdir -p /app/state && chown 10001:10001 /app/state
VOLUME ["/app/state"]
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# Prometheus metrics, /status and /healthz (metrics.port); CDC_METRICS_HOST above makes
# config/cdc.yaml listen on all interfaces inside the container.
EXPOSE 9187
# Python is PID 1 here: fine, since the daemon handles SIGTERM/SIGINT itself and starts no
# child processes that would need reaping. Logs are JSON lines on stderr (no TTY).
ENTRYPOINT ["cdc", "run"]
CMD ["--config", "/app/config/cdc.yaml", "--connectors", "/app/connectors"]
