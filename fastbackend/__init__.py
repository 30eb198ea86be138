"""Development-time tooling: export, pipelines, checks, benchmarks and the CLI.

Never imported by the runtime; the serverless image does not need it.
"""
