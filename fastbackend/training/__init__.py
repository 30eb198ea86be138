"""Training and evaluation tools per task, imported by the task notebooks (notebooks/<task>/)."""
