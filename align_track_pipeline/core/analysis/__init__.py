"""Answers from the Parquet tables without a UI: search, compare, report and export.

Plain Python over DuckDB; the `align-track` commands and the `scene_comparison` asset are thin
shells over these modules.
"""
