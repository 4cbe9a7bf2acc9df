# syntax=docker/dockerfile:1
# The hot-path image: `python -m streaming.worker` (default), `python -m streaming.collector`,
# `python -m streaming.lake_sink` and the one-shot topic creation. Base install only: no Dagster, dbt or MLflow.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t firstmile/worker .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: resolve and install into a virtualenv that the runtime stage copies whole ----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# bitarray-hardbyte (required by iab-tcf) publishes no wheel for CPython 3.11 and compiles from source; the
# compiler stays in this stage. Build-stage tools only, so the Debian versions are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (from pyproject's [project].dependencies), so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
COPY streaming ./streaming
COPY warehouse ./warehouse
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import streaming.worker, streaming.lake_sink, streaming.collector, warehouse.lake"

# ---- runtime: the virtualenv and a non-root user, nothing else ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# The app user is numeric (10001) so orchestrators can verify runAsNonRoot.
LABEL org.opencontainers.image.title="firstmile-worker" \
      org.opencontainers.image.description="firstmile hot path: worker, collector, lake sink" \
      org.opencontainers.image.licenses="Apache-2.0"
# /data/lake and /data/state exist in the image owned by the app user, so named volumes mounted there start
# with that ownership (Docker copies it into an empty volume).
RUN groupadd --system --gid 10001 firstmile \
 && useradd --system --uid 10001 --gid firstmile --home-dir /app --shell /usr/sbin/nologin firstmile \
 && mkdir -p /app /data/lake /data/state \
 && chown -R firstmile:firstmile /app /data
COPY --from=build /opt/venv /opt/venv
COPY --chown=firstmile:firstmile docker/healthcheck.py /app/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FIRSTMILE_DATA_DIR=/data
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Worker and lake sink: the broker answers and events.raw exists. The collector overrides this in compose with
# its /readyz (broker accepts writes).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "kafka"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "streaming.worker"]
