-- MLflow's backend store, beside Airflow's metadata DB (POSTGRES_DB) on the same server and owned by
-- the same user. The postgres image runs this once, when it initialises an empty data volume.
CREATE DATABASE mlflow;
-- Users, passwords and grants of MLflow's basic-auth app (mlflow server --app-name basic-auth).
CREATE DATABASE mlflow_auth;
