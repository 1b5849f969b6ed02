#!/bin/sh
# `mlflow server "$@"`, with the basic-auth app's config written from the environment first:
# MLflow reads the auth database_uri from that ini file only, and the URI holds a password.
set -eu
if [ -n "${MLFLOW_AUTH_DATABASE_URI:-}" ]; then
    config="${MLFLOW_AUTH_CONFIG_PATH:-${HOME}/basic_auth.ini}"
    # NO_PERMISSIONS: a user reaches only what a grant names (mlops registry-access); admins all.
    # auth_cache_ttl_seconds > 0 keeps a verified password for that long in each server worker
    # (MLflow's default 0 runs scrypt on every request).
    (
        umask 077
        printf '[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = %s\n%s\n%s\n' \
            "${MLFLOW_AUTH_DATABASE_URI}" \
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
            "auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-0}" >"${config}"
    )
    export MLFLOW_AUTH_CONFIG_PATH="${config}"
fi
exec mlflow server "$@"
