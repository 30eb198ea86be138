"""Training tools per task beyond classification (whose loop is exported from notebooks/03_train_adapter.ipynb)."""
