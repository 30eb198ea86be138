"""Pipelines: the notebooks run with papermill as parameterised, typed, recorded runs.

Stages, one module each: `definitions` (pipelines.yaml), `params` (typed notebook parameters),
`plan` (overrides and sweeps -> checked run plans), `execute` (one run into its folder),
`sweep` (many runs, in processes), `progress` (the display), `summary` (the tables), `runner`
(`run_pipeline`, the entry point), `errors`.
"""
