#!/usr/bin/env bash
# Run by the postgres image once, when it initialises an empty data volume (docker-entrypoint-initdb.d);
# safe to run again by hand (README, "The production stack"). One login role per application, neither
# a superuser: `airflow` owns Airflow's database, `mlflow` owns MLflow's store and its auth database,
# and no database accepts connections from PUBLIC. The superuser (POSTGRES_USER) stays in this container.
set -euo pipefail

: "${POSTGRES_USER:?}"
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"

# The passwords reach SQL as psql variables read from the environment (\getenv) and quoted as literals
# (:'name'): never spliced into SQL by the shell, never on a command line. The heredoc is quoted ('SQL').
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD

SELECT 'CREATE ROLE airflow' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airflow') \gexec
SELECT 'CREATE ROLE mlflow' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') \gexec
ALTER ROLE airflow WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'airflow_password';
ALTER ROLE mlflow WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'mlflow_password';

-- airflow is usually there already (POSTGRES_DB); MLflow's backend store and basic-auth database are not.
SELECT 'CREATE DATABASE airflow OWNER airflow'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'airflow') \gexec
SELECT 'CREATE DATABASE mlflow OWNER mlflow'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec
SELECT 'CREATE DATABASE mlflow_auth OWNER mlflow'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow_auth') \gexec
ALTER DATABASE airflow OWNER TO airflow;
ALTER DATABASE mlflow OWNER TO mlflow;
ALTER DATABASE mlflow_auth OWNER TO mlflow;

-- Each database admits its owner only: an Airflow task holding Airflow's URI cannot reach mlflow_auth.
REVOKE CONNECT, TEMPORARY ON DATABASE airflow FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE mlflow FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE mlflow_auth FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE airflow TO airflow;
GRANT CONNECT, TEMPORARY ON DATABASE mlflow TO mlflow;
GRANT CONNECT, TEMPORARY ON DATABASE mlflow_auth TO mlflow;
SQL
