"""The progress display: one bar over every cell of the invocation, one line per finished step.

The bar (tqdm, on stderr) shows only on a terminal; the step lines always print, so a log of
`make run` on a pod or in CI still says what ran, how long it took and where it stopped.
"""

from __future__ import annotations

import itertools
import sys

from fastbackend.pipeline.execute import ProgressEvent
from fastbackend.pipeline.plan import RunPlan


class ProgressDisplay:
    """Turns ProgressEvents (from this process or from sweep workers) into the bar and lines."""

    def __init__(self, plans: tuple[RunPlan, ...], bar: bool | None = None) -> None:
        from tqdm import tqdm

        self.plans = plans
        # offsets[run][k]: cells of the steps before step k (k == n_steps: the whole run)
        self.offsets = [list(itertools.accumulate((s.n_cells for s in p.steps), initial=0)) for p in plans]
        self.done = [0] * len(plans)
        self.finished = 0
        self.current: dict[int, tuple[int, int, int]] = {}  # run -> (step, cell, n_cells)
        enabled = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(
            total=sum(o[-1] for o in self.offsets),
            unit="cell",
            disable=not enabled,
            dynamic_ncols=True,
            leave=False,
            file=sys.stderr,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells [{elapsed}]",
        )

    def __call__(self, event: ProgressEvent) -> None:
        plan, offsets = self.plans[event.run], self.offsets[event.run]
        if event.kind == "cell":
            self._advance(event.run, offsets[event.step] + event.cell)
            self.current[event.run] = (event.step, event.cell, event.n_cells)
        else:
            # A failed step skips the rest of its run: its cells count as passed for the bar.
            last = event.step + 1 if event.status == "ok" else len(plan.steps)
            self._advance(event.run, offsets[last])
            step = plan.steps[event.step]
            where = f"{plan.label} " if plan.label else ""
            self.write(
                f"{where}[{event.step + 1}/{len(plan.steps)}] {step.name} ({step.notebook}): "
                f"{event.status} in {event.seconds:.1f} s"
            )
            if last == len(plan.steps):
                self.finished += 1
                self.current.pop(event.run, None)
        self._describe()

    def _advance(self, run: int, position: int) -> None:
        position = min(max(position, self.done[run]), self.offsets[run][-1])
        self.bar.update(position - self.done[run])
        self.done[run] = position

    def _describe(self) -> None:
        def where(run: int) -> str:
            step, cell, n_cells = self.current[run]
            plan = self.plans[run]
            return f"[{step + 1}/{len(plan.steps)}] {plan.steps[step].name} cell {cell + 1}/{n_cells}"

        first = self.plans[0]
        if len(self.plans) == 1:
            text = f"{first.pipeline} {where(0)}" if 0 in self.current else first.pipeline
        else:
            running = ", ".join(f"{self.plans[r].label} {where(r)}" for r in sorted(self.current))
            text = f"{first.pipeline} {self.finished}/{len(self.plans)} runs done" + (
                f" | {running}" if running else ""
            )
        self.bar.set_description_str(text, refresh=True)

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()
