"""Training and evaluation tools per task beyond classification (whose loop is exported from
notebooks/03_train_adapter.ipynb), imported by the task notebooks (notebooks/<task>/)."""
