# syntax=docker/dockerfile:1
# The platform image: Dagster webserver + daemon (default command), dbt, ml, and the MLflow server.
# Build from the repository root:  docker build -f docker/platform.Dockerfile -t firstmile/platform .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: virtualenv with the base install, the [platform] extra and the PostgreSQL drivers ---------------------
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
WORKDIR /app
COPY pyproject.toml README.md ./
# dagster-postgres: Dagster's run/event/schedule storage; psycopg2-binary: MLflow's PostgreSQL backend store.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['platform'] + p['optional-dependencies']['simulator']))" \
        > /tmp/requirements.txt \
 && printf '%s\n' 'dagster-postgres>=0.29,<0.30' 'psycopg2-binary>=2.9,<3' >> /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
COPY streaming ./streaming
COPY warehouse ./warehouse
COPY ml ./ml
COPY orchestration ./orchestration
COPY dbt_project ./dbt_project
# Editable on purpose: the tree stays at /app, where dbt_project/ sits beside the packages that locate it.
RUN pip install --no-cache-dir --no-deps -e . \
 && python -c "import streaming, warehouse, dagster_postgres, psycopg2, mlflow, dagster_dbt"
# dagster-dbt needs the manifest before the definitions import (STACK-FACTS.md): parse once, at build time.
RUN FIRSTMILE_DUCKDB_PATH=/tmp/parse.duckdb FIRSTMILE_LAKE_DIR=/data/lake \
    dbt parse --project-dir /app/dbt_project --profiles-dir /app/dbt_project --quiet \
 && test -f /app/dbt_project/target/manifest.json \
 && rm -rf /app/dbt_project/logs /tmp/parse.duckdb

# ---- runtime ------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# The app user is numeric (10001) so orchestrators can verify runAsNonRoot.
LABEL org.opencontainers.image.title="firstmile-platform" \
      org.opencontainers.image.description="firstmile warehouse, learning and orchestration: Dagster, dbt, ml, MLflow" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 firstmile \
 && useradd --system --uid 10001 --gid firstmile --home-dir /home/firstmile --create-home \
        --shell /usr/sbin/nologin firstmile \
 && mkdir -p /app /data/lake /data/dagster /mlflow/artifacts /opt/dagster/home \
 && chown -R firstmile:firstmile /app /data /mlflow /opt/dagster
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=firstmile:firstmile /app /app
COPY --chown=firstmile:firstmile docker/dagster.yaml /opt/dagster/home/dagster.yaml
COPY --chown=firstmile:firstmile docker/healthcheck.py /app/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FIRSTMILE_DATA_DIR=/data \
    FIRSTMILE_LAKE_DIR=/data/lake \
    FIRSTMILE_DUCKDB_PATH=/data/warehouse.duckdb \
    DAGSTER_HOME=/opt/dagster/home \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
WORKDIR /app
USER 10001:10001
# DuckDB reads the landing zone from S3 through httpfs (FIRSTMILE_LAKE_URI=s3://...): install the extension now,
# into the app user's home, so the containers never download it at run time.
RUN python -c "import duckdb; duckdb.connect().execute('INSTALL httpfs')"
EXPOSE 3000 5000
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "http", "http://127.0.0.1:3000/server_info"]
STOPSIGNAL SIGTERM
CMD ["dagster-webserver", "--host", "0.0.0.0", "--port", "3000", "-m", "orchestration.definitions"]
