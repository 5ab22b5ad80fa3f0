-- The MLflow server's database beside Dagster's (POSTGRES_DB) on the one Postgres service.
CREATE DATABASE mlflow;
