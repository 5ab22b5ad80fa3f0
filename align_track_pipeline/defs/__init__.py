"""The Dagster shell: says when and with what the core runs."""
