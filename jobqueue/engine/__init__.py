"""The query engine: one planned query -> Parquet result + summary, on DuckDB (placeholder, see next commit)."""
