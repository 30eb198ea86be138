"""`fastbackend doctor [BASE] [ADAPTERS]`: before deploying, will this worker serve a model faithfully?

Every verdict comes from the worker's own setup steps, run one by one so that each is reported
rather than the first failure alone: the device (worker.acceleration.resolve_device), the
processor (worker.processors: read_preprocess_config, and build_preprocess_config per field),
the model, the adapter scan and the `*` preload (worker.models.ModelHost), and a warm-up forward.
No rule is repeated here; this module only asks those steps and lays out their answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from worker.config import ENV_VARS, ConfigError, WorkerConfig

NO_ADAPTERS = "none"
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_TYPE_KEYS = ("image_processor_type", "feature_extractor_type", "processor_class")
_SHOWN_LABELS = 5


class DoctorError(Exception):
    """Nothing to examine (a missing folder, a hub id not in the cache, a bad config): one line."""


@dataclass
class Check:
    what: str
    value: str
    ok: bool
    verdict: str = "ok"


@dataclass
class FieldRow:
    field: str
    value: str
    source: str  # "file", or "default" (the processor class's own value)
    honoured: bool | None  # None: not checked, the processor itself is refused
    note: str = ""


@dataclass
class AdapterRow:
    name: str
    path: str
    served: bool
    reason: str


@dataclass
class Diagnosis:
    base: str
    adapters_dir: str
    checks: list[Check] = field(default_factory=list)
    fields: list[FieldRow] = field(default_factory=list)
    adapters: list[AdapterRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            all(c.ok for c in self.checks)
            and all(f.honoured is not False for f in self.fields)
            and all(a.served for a in self.adapters)
        )

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


@contextlib.contextmanager
def _quiet_worker_logs() -> Iterator[None]:
    """The worker's per-adapter log lines say what the table says; keep them out of the report."""
    from worker.telemetry import LOGGER_NAME

    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


def _short(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def describe_pixels(config: Any) -> str:
    """What the worker does to an image, from the resolved PreprocessConfig."""
    mode = "RGB" if config.num_channels == 3 else "L"
    steps = []
    if config.resize == "exact":
        steps.append(f"resize to {config.resize_size[0]}x{config.resize_size[1]}")
    elif config.resize == "crop_pct":
        steps.append(f"shortest edge to {config.resize_size[0]}/crop_pct {config.crop_pct:g}")
    elif config.resize == "shortest_edge":
        steps.append(f"shortest edge to {config.resize_size[0]}")
    if config.resize != "none":
        steps[-1] += f" ({_RESAMPLE.get(config.resample, config.resample)})"
    if config.resize == "crop_pct" or config.center_crop:
        steps.append("center crop")
    if config.rescale_factor is not None:
        steps.append(f"rescale {config.rescale_factor:.6g}" + (" - 1" if config.rescale_offset else ""))
    if config.normalize:
        steps.append(f"normalize mean {list(config.mean)} std {list(config.std)}")
    return f"{config.processor}: {mode} {config.height}x{config.width}; " + ", ".join(steps)


def _is_read(name: str, fields: dict, model_config: dict, resolved: Any) -> bool:
    """Whether the field changes anything: set to null, then to a value of no type it could take, the
    processor must come out different (or be refused) if the field is used."""
    from worker.processors import build_preprocess_config

    for probe in (None, "\x00doctor-probe"):
        try:
            if build_preprocess_config({**fields, name: probe}, model_config) != resolved:
                return True
        except ValueError:
            return True
    return False


def processor_fields(base_dir: Path) -> list[FieldRow]:
    """Each field of preprocessor_config.json (and each class default the processor applies), honoured
    or not, by worker.processors's own build_preprocess_config: a refusal names its field first, so
    that field is marked, set back to its class default, and the rest is built again."""
    from worker.processors import PROCESSOR_DEFAULTS, PROCESSOR_FILE, build_preprocess_config

    try:
        fields = json.loads((base_dir / PROCESSOR_FILE).read_text())
        model_config = json.loads((base_dir / "config.json").read_text())
    except (OSError, ValueError):
        return []  # the processor check reports the file itself
    if not isinstance(fields, dict):
        return []
    refused: dict[str, str] = {}
    trial, resolved = dict(fields), None
    while resolved is None:
        try:
            resolved = build_preprocess_config(trial, model_config)
        except ValueError as exc:
            name = (re.match(r"\w+", str(exc)) or [""])[0]
            if name not in trial or name in _TYPE_KEYS:
                refused.setdefault(name, str(exc))  # the type, or a combination: nothing to set back
                break
            refused[name] = str(exc)
            del trial[name]
    rows = []
    for name, value in fields.items():
        if name in refused:
            rows.append(FieldRow(name, _short(value), "file", False, refused[name]))
            continue
        if resolved is None:
            rows.append(FieldRow(name, _short(value), "file", None, "not checked: the processor is refused"))
            continue
        note = ""
        if name not in _TYPE_KEYS and not _is_read(name, trial, model_config, resolved):
            note = "no effect: this processor does not use it here"
        rows.append(FieldRow(name, _short(value), "file", True, note))
    if resolved is not None:
        for name, value in PROCESSOR_DEFAULTS[resolved.processor].items():
            if name not in fields:
                rows.append(FieldRow(name, _short(value), "default", True))
    rows += [FieldRow(name, "", "-", False, reason) for name, reason in refused.items() if name not in fields]
    return rows


def _base_dir(base: str) -> tuple[Path, str]:
    from worker.errors import WorkerError
    from worker.hub import is_hub_id, local_model_dir

    if not Path(base).expanduser().exists() and not is_hub_id(base):
        raise DoctorError(f"{base}: no such folder (nor a hub id org/name)")
    try:
        path = local_model_dir(base)
    except WorkerError as exc:
        raise DoctorError(exc.message) from None
    return path, ("folder" if Path(base).expanduser().exists() else f"hub id, cached at {path}")


def diagnose(
    base: str | None = None, adapters: str | None = None, environ: Mapping[str, str] | None = None
) -> Diagnosis:
    """Run the worker's setup steps on `base` and `adapters` (None: the configured ones), each reported.

    Raises:
        DoctorError: the configuration is invalid, the base folder or adapters folder is missing, or the
            hub id is not in the cache; one line.
    """
    env = os.environ if environ is None else environ
    try:
        config = WorkerConfig.from_env(env)
    except ConfigError as exc:
        raise DoctorError(str(exc)) from None
    adapters = adapters if adapters is not None else config.adapters_dir
    explicit = adapters != WorkerConfig.adapters_dir or ENV_VARS["adapters_dir"] in env
    if adapters != NO_ADAPTERS and explicit and not Path(adapters).is_dir():
        raise DoctorError(f"{adapters}: no such adapters folder (use '{NO_ADAPTERS}' for the base alone)")
    # Every adapter is tried, as FASTBACKEND_PRELOAD_ADAPTERS=* does: refused ones are listed, not fatal.
    config = replace(
        config, base_model=base or config.base_model, adapters_dir=adapters, preload_adapters=("*",), merge_adapter=""
    )
    base_dir, kind = _base_dir(config.base_model)
    report = Diagnosis(config.base_model, adapters)
    with _quiet_worker_logs():
        _run_steps(report, config, base_dir, kind)
    return report


def _run_steps(report: Diagnosis, config: WorkerConfig, base_dir: Path, kind: str) -> None:
    from exported import inference, preprocess
    from worker.acceleration import resolve_device
    from worker.contract import NotebookFunctions
    from worker.errors import WorkerError
    from worker.models import ModelHost

    add = report.checks.append
    add(Check("base", f"{config.base_model} ({kind})", True))
    try:
        device = resolve_device(config.device)
        add(Check("device", f"{device} ({ENV_VARS['device']}={config.device})", True))
    except ConfigError as exc:
        add(Check("device", config.device, False, f"{exc}; the checks below ran on cpu"))
        config = replace(config, device="cpu")
    add(Check("dtype", f"{config.dtype} (autocast {config.autocast})", True))
    host = ModelHost(config, NotebookFunctions.from_modules(inference, preprocess))
    try:
        host.load_processor(base_dir)
        add(Check("processor", describe_pixels(host.preprocess_config), True))
    except (WorkerError, ConfigError) as exc:
        add(Check("processor", "", False, str(exc) if isinstance(exc, ConfigError) else exc.message))
    report.fields = processor_fields(base_dir)
    try:
        host.load_model(base_dir)
    except (WorkerError, ConfigError) as exc:
        add(Check("model", "", False, str(exc) if isinstance(exc, ConfigError) else exc.message))
        return
    architectures = json.loads((base_dir / "config.json").read_text()).get("architectures") or ["-"]
    add(Check("architecture", f"{', '.join(architectures)} (model_type {host.model.config.model_type})", True))
    how = f"{ENV_VARS['task']}={config.task}" if config.task else "from config.json's architectures"
    add(Check("task", f"{host.task.name} ({how})", True))
    add(Check("model class", type(host.model).__name__, True))
    labels = host.labels
    shown = ", ".join(labels[:_SHOWN_LABELS]) + (", ..." if len(labels) > _SHOWN_LABELS else "")
    add(Check("labels", f"{len(labels)}: {shown}", True))
    if config.adapters_dir != NO_ADAPTERS:
        _adapters(report, host)
    if host.preprocess_config is not None:
        try:
            host.warm_up()  # the worker's own warm-up: one forward per adapter loaded, and the base
            add(Check("forward", f"a blank batch through the base and {len(host.registry)} adapter(s)", True))
        except Exception as exc:  # anything the forward raises is the finding itself
            add(Check("forward", "", False, _reason(exc)))


def _adapters(report: Diagnosis, host: Any) -> None:
    from worker.errors import WorkerError

    try:
        host.scan_adapters()
    except WorkerError as exc:
        report.checks.append(Check("adapters", host.config.adapters_dir, False, exc.message))
        return
    if not Path(host.config.adapters_dir).is_dir():
        report.checks.append(Check("adapters", f"none ({host.config.adapters_dir}: no folder)", True))
        return
    scanned = {s.name for s in host.skipped}
    try:
        host.preload(names=list(host.registry))  # every one is loaded; a refused one is listed with its reason
    except WorkerError as exc:
        report.checks.append(Check("adapters", host.config.adapters_dir, False, exc.message))
    refused = {s.name: s for s in host.refusals() if s.name not in scanned}
    host.skipped = [s for s in host.skipped if s.name in scanned] + list(refused.values())
    for name, entry in host.registry.items():
        if name in refused:
            continue
        recorded = host.fns.read_adapter_meta(entry.path).get("base_fingerprint")
        how = (
            "the base fingerprint in fastbackend.json matches"
            if recorded
            else "keys and shapes match (no fingerprint: `fastbackend adapters stamp` records one)"
        )
        report.adapters.append(AdapterRow(name, str(entry.path), True, how))
    for skipped in host.skipped:
        report.adapters.append(AdapterRow(skipped.name, skipped.path, False, skipped.reason))
    report.adapters.sort(key=lambda row: row.name)


def render(report: Diagnosis) -> str:
    """The report as the CLI prints it: one table per part, then the verdict."""
    from fastbackend.tables import table

    checks = [(c.what, c.value, c.verdict if c.ok else f"NO: {c.verdict}") for c in report.checks]
    parts = [
        f"fastbackend doctor: {report.base}, adapters from {report.adapters_dir}",
        table([("check", "value", "verdict"), *checks]),
    ]
    if report.fields:
        honoured = {True: "yes", False: "NO", None: "-"}
        rows = [(f.field, f.value, f.source, honoured[f.honoured], f.note) for f in report.fields]
        parts.append(table([("processor field", "value", "from", "honoured", "note"), *rows]))
    if report.adapters:
        rows = [(a.name, "served" if a.served else "REFUSED", a.reason, a.path) for a in report.adapters]
        parts.append(table([("adapter", "verdict", "why", "folder"), *rows]))
    verdict = "yes" if report.ok else "NO (see the rows marked above)"
    parts.append(f"served faithfully by this worker: {verdict}")
    return "\n\n".join(parts)


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        report = diagnose(args.base, args.adapters)
    except DoctorError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_json(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1


def add_doctor_parser(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="before deploying: will this worker serve a model (and its adapters) faithfully?",
        description="Runs the worker's own setup steps on BASE and ADAPTERS, one by one, and reports each: "
        "device and dtype, architecture and model class, the processor and each of its fields (honoured or "
        "not), labels, every adapter (served, or refused and why), a warm-up forward. Exit status: 0 when "
        "everything will be served faithfully, 1 otherwise (or one line when there is nothing to examine).",
    )
    doctor.add_argument(
        "base", nargs="?", help=f"a model folder or a cached hub id (default: ${ENV_VARS['base_model']})"
    )
    doctor.add_argument(
        "adapters",
        nargs="?",
        help=f"an adapters folder, or '{NO_ADAPTERS}' (default: ${ENV_VARS['adapters_dir']}, else models/adapters)",
    )
    doctor.add_argument("--json", action="store_true", help="the report as JSON")
    doctor.set_defaults(func=cmd_doctor)
