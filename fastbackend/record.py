"""`record(name, value)`: how a notebook reports a metric to the pipeline runner.

The value is displayed as a cell output with its own MIME type, so it shows in JupyterLab
and is read back from the executed notebook by the runner (no files, no environment
variables: a notebook behaves the same interactively and under papermill).
"""

from __future__ import annotations

import json
import math
from typing import Any

METRIC_MIME_TYPE = "application/vnd.fastbackend.metric+json"


def record(name: str, value: float | int | str | bool) -> Any:
    """Record one named metric from a notebook.

    Args:
        name: metric name, e.g. "inverted/adapter_accuracy".
        value: a JSON scalar; floats must be finite.

    Returns:
        The value, so `x = record("n", compute())` reads naturally.
    """
    if not isinstance(value, (int, float, str, bool)):
        raise TypeError(f"record({name!r}): value must be a number, string or bool, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"record({name!r}): value must be finite, got {value}")
    from IPython.display import display

    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    display({METRIC_MIME_TYPE: {"name": name, "value": value}, "text/plain": f"{name} = {shown}"}, raw=True)
    return value


def metrics_from_notebook(nb: Any) -> dict[str, Any]:
    """Every metric recorded in an executed notebook (a later record of a name wins)."""
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {}).get(METRIC_MIME_TYPE)
            if data is not None:
                if isinstance(data, str):
                    data = json.loads(data)
                found[data["name"]] = data["value"]
    return found
