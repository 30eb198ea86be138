"""The vocabulary of `fastbackend check`: severities, the review's areas and checklist items, a rule.

Areas are the rows of the original review's summary table; checklist items are the lines of
its pre-deployment checklist. The rules themselves are catalogued in rules.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(str, enum.Enum):
    """How bad a failed item is: critical blocks deployment, high and low are warnings."""

    CRITICAL = "critical"
    HIGH = "high"
    LOW = "low"


class Area(str, enum.Enum):
    """The review's summary-table rows, in its order."""

    HANDLER_STRUCTURE = "Handler Structure"
    IO_FORMAT = "Input/Output Format"
    ERROR_HANDLING = "Error Handling"
    SERVERLESS_START = "Serverless Start"
    LOCAL_TESTING = "Local Testing"
    PAYLOAD_LIMITS = "Payload Limits"
    PERFORMANCE = "Performance"


# Checklist items, in the order the review listed them (the last five need --run).
SIGNATURE = "Handler signature"
INPUT = "Input extraction"
RETURN_FORMAT = "Return format"
ERRORS = "Error handling"
START_CALLED = "`runpod.serverless.start` called"
IMPORT_RUNPOD = "`import runpod`"
MAIN_GUARD = "Main guard"
NO_SOURCE_ERRORS = "No syntax or import errors"
SETUP_TIMING = "Setup timing"
NO_INSTALLS = "No run-time installs"
PAYLOAD_VALIDATION = "Payload size validation"
MEMORY_CLEANUP = "Memory cleanup"
LOCAL_TESTING = "Local testing support"
RUN_TEST_INPUT = "`--test_input` run"
RUN_LOCAL_API = "Local API (`--rp_serve_api`)"
RUN_OVERSIZE = "Oversized payload rejected"
RUN_MALFORMED = "Malformed payload answered"
RUN_COLD_START = "Cold start and warm latency"

STATIC_CHECKLIST = (
    SIGNATURE,
    INPUT,
    RETURN_FORMAT,
    ERRORS,
    START_CALLED,
    IMPORT_RUNPOD,
    MAIN_GUARD,
    NO_SOURCE_ERRORS,
    SETUP_TIMING,
    NO_INSTALLS,
    PAYLOAD_VALIDATION,
    MEMORY_CLEANUP,
    LOCAL_TESTING,
)
DYNAMIC_CHECKLIST = (RUN_TEST_INPUT, RUN_LOCAL_API, RUN_OVERSIZE, RUN_MALFORMED, RUN_COLD_START)


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    area: Area
    checklist: str
    title: str
    fix: str
