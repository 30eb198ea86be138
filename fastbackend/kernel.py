"""The kernel the tools run notebooks in: papermill's engine with a per-cell callback, quiet arguments.

Imports papermill; `fastbackend.notebooks.run_notebook` imports this module when it runs one.
"""

from __future__ import annotations

from papermill.engines import NBClientEngine, papermill_engines

ENGINE = "fastbackend-progress"
# The kernel's own log is noise in a run's output: a warning on every start that its loopback TCP
# is unencrypted, and "KeyboardInterrupt caught in kernel" when jupyter_client interrupts it
# before every shutdown. Cell errors are in the executed notebook; a crash still reaches stderr.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)


class _ProgressEngine(NBClientEngine):
    """papermill's default engine, plus a callback when each cell starts (for the progress bar)."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
        if on_cell is not None:
            started, total = nb_man.cell_start, len(nb_man.nb.cells)

            def cell_start(cell, cell_index=None, **kw):
                started(cell, cell_index, **kw)
                on_cell(cell_index or 0, total)

            nb_man.cell_start = cell_start
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register(ENGINE, _ProgressEngine)
