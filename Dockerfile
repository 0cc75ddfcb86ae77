# askelephant-kafka container image.
#
#   docker build -t askelephant-kafka:local .
#   docker run --rm --read-only --tmpfs /tmp \
#     -e ASKELEPHANT_API_KEY=... -e KAFKA_BOOTSTRAP_SERVERS=... askelephant-kafka:local
#
# Needs BuildKit (the default builder since Docker 23) for RUN --mount.
#
# Stage 1 builds the project wheel (plus wheels of every dependency); the final
# stage installs them into a virtualenv, without compilers or pip caches, and runs
# as an unprivileged numeric user so that it satisfies the Kubernetes "restricted"
# Pod Security Standard and works with a read-only root filesystem (only /tmp
# needs to be writable).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md* ./
# producer/ is the product alone (the devstack and the demo live outside it, in devstack/).
# producer/_schemas is a symlink to ../schemas: the wheel gets real copies of the
# Avro schemas (package data), so the runtime stage needs nothing but the wheels.
COPY producer ./producer
COPY schemas ./schemas
# The API simulator is a distribution of its own (never inside the product wheel); its wheel
# is built here too so that docker-compose can run it from this image (WITH_SIMULATOR below).
COPY simulator ./simulator

# The project wheel, the simulator wheel and the wheels of all of their runtime dependencies
# (confluent-kafka, fastavro, ... ship manylinux wheels, so nothing compiles here).
RUN python -m pip wheel --wheel-dir /wheels . ./simulator

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001
# true: also install the API simulator (docker-compose's local stack); the default image
# holds the product alone.
ARG WITH_SIMULATOR=false

LABEL org.opencontainers.image.title="askelephant-kafka" \
      org.opencontainers.image.description="Turns the AskElephant public API v2 into Avro change streams on Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    METRICS_PORT=9108

RUN groupadd --system --gid "${APP_GID}" app \
 && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin app

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv "${VIRTUAL_ENV}" \
 && "${VIRTUAL_ENV}/bin/pip" install --no-index --find-links=/wheels askelephant-kafka \
 && if [ "${WITH_SIMULATOR}" = "true" ]; then \
      "${VIRTUAL_ENV}/bin/pip" install --no-index --find-links=/wheels askelephant-simulator; \
    fi \
 && "${VIRTUAL_ENV}/bin/pip" uninstall -y pip \
 && askelephant-kafka --help >/dev/null

USER ${APP_UID}:${APP_GID}

EXPOSE 9108

# No curl in the slim image: the interpreter probes /healthz on METRICS_PORT (9108).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('METRICS_PORT') or '9108'; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["askelephant-kafka"]
CMD ["run"]
