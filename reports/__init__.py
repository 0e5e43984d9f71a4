"""Report generator: reads the Optuna and MLflow stores and draws one PDF (next milestone)."""
