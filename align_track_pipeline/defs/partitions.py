import dagster as dg

# One partition per run directory; keys come from core.discovery.partition_key.
experiment_partitions = dg.DynamicPartitionsDefinition(name="experiments")
