"""The report: reads the Optuna storage and the MLflow store (read-only) into pandas
DataFrames, draws one figure per page from them, and writes the pages into one PDF."""
