"""`fastbackend batch`: plan (items -> jobs), runner (one job, retries), results (the JSONL file), engine."""
