# Airflow image of the bundle: the locked requirements.txt, the plugins package, the DAGs and include/.
# docker-compose.yaml builds it once and runs every Airflow component from it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    MLOPS_PROJECT_DIR=/opt/airflow

# libgomp1: OpenMP runtime of xgboost and lightgbm; curl: container health checks. Debian's point
# releases replace package versions, so an exact pin would break the build; the base tag pins the rest.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --create-home --home-dir /opt/airflow airflow

RUN pip install --no-cache-dir uv==0.13.9
COPY requirements.txt /tmp/requirements.txt
RUN uv pip install --system --no-cache --requirement /tmp/requirements.txt

WORKDIR /opt/airflow
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 plugins ./plugins
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 include ./include
# The folders docker-compose mounts volumes on, owned by airflow: a new named volume takes over the
# owner of the folder it is first mounted on, so the workers can write to it.
RUN uv pip install --system --no-cache --no-deps --editable . \
    && mkdir -p data reports evidently logs auth && chown -R airflow:0 data reports evidently logs auth

# Numeric, so Kubernetes' runAsNonRoot and the host can tell it is not root.
USER 50000
ENTRYPOINT ["airflow"]
CMD ["version"]
