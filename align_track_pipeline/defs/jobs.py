import dagster as dg

# Parse run directories into the Parquet tables; one run covers a whole partition range.
ingest_job = dg.define_asset_job(
    "ingest", selection=dg.AssetSelection.assets("experiments", "scenes")
)

# Feed MLflow from the Parquet partitions (a separate run: the tables log their partitions
# one by one, so a downstream step in the same run would see no upstream output).
mlflow_job = dg.define_asset_job("mlflow", selection=dg.AssetSelection.assets("mlflow_runs"))

# Feed Aim from the Parquet partitions, also in its own run.
aim_job = dg.define_asset_job("aim", selection=dg.AssetSelection.assets("aim_runs"))
