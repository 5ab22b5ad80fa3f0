import dagster as dg

# Parse run directories into the Parquet tables; one run covers a whole partition range.
ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.assets("experiments", "scenes"),
)
