"""`fastbackend check`: the RunPod compliance review, automated, for any handler module.

One module per stage: `source` loads the handler and the project code it imports, `resolve`
says what names refer to, `flow` follows calls and return values, `entry` finds start() and the
handler, `checks_*` hold the static rules (`static` runs them), `dynamic` runs the module for `--run`
(through fastbackend/local.py, the one local runner; `answers` reads what comes back),
`scoring` turns findings into the review's table and score, `render` writes Markdown or JSON.
`rules` is the catalogue of findings and `model` the data they travel in.
"""

from __future__ import annotations

from fastbackend.check.checklist import Area, Severity
from fastbackend.check.command import CheckOptions, review, run_command
from fastbackend.check.model import CheckError, Finding, Report
from fastbackend.check.rules import RULES

__all__ = ["CheckError", "CheckOptions", "Finding", "Report", "RULES", "Area", "Severity", "review", "run_command"]
