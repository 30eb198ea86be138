"""The process environment the ML libraries need, set before they are imported.

albumentations checks for updates when imported and huggingface_hub looks models up online
and draws progress bars: a serverless worker (and every tool or test that starts one) must
never wait on the network or fill its log. This is the one list of those variables; the
Makefile, the Dockerfile and scripts/pod-setup.sh cannot import it and repeat it, and a unit
test keeps them equal.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

QUIET_ENV: dict[str, str] = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def quiet_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Set each QUIET_ENV variable that is not set yet (an explicit value, e.g. HF_HUB_OFFLINE=0, wins)."""
    env = os.environ if environ is None else environ
    for key, value in QUIET_ENV.items():
        env.setdefault(key, value)
