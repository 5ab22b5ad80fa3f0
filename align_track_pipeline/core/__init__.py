"""Plain-Python core: discovery, parsing, table schemas and store writers. No Dagster here."""
