"""For RunPod Hub, which looks for a `handler.py`: the worker's handler is generated into
`exported/handler.py` by `fastbackend export` (never edit it by hand) and the image runs
`python -u -m exported.handler`. This file only points there; it is not a second handler.
"""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exported.handler import handler  # noqa: E402,F401  (what the Hub's checks import)

if __name__ == "__main__":
    runpy.run_module("exported.handler", run_name="__main__", alter_sys=True)
