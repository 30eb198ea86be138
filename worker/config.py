"""Worker configuration: immutable, validated, read from the environment in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from worker.errors import ERROR_BODY_MAX_BYTES

# Every setting is read from FASTBACKEND_<FIELD NAME> (see ENV_VARS below, built from the
# dataclass so names and fields cannot drift). Nothing else in the runtime reads os.environ.
ENV_PREFIX = "FASTBACKEND_"

RUNSYNC_LIMIT_BYTES = 20_000_000  # RunPod refuses /runsync bodies over 20 MB
RUN_LIMIT_BYTES = 10_000_000  # and /run bodies over 10 MB
RESULT_LIMIT_BYTES = 20_000_000  # results over ~20 MB fail to post

ALL = "*"
# The adapter-name rule, for config, job input (schema.py) and adapter folders (models.py):
# a name is also a folder name, so no separators, no leading dot, bounded length.
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ADAPTER_NAME = re.compile(ADAPTER_NAME_PATTERN)


def is_adapter_name(name: str) -> bool:
    return bool(_ADAPTER_NAME.match(name))


# The devices the worker can place a model on; whether one is present here is checked at setup,
# where torch is imported (worker/acceleration.py's resolve_device).
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


# Set by RunPod on a deployed worker (the SDK posts results there); absent in the local modes.
PRODUCTION_ENV_VAR = "RUNPOD_WEBHOOK_POST_OUTPUT"


def production_mode(environ: Mapping[str, str] | None = None) -> bool:
    """True on a deployed worker, where the SDK can post progress and results to RunPod."""
    return bool((os.environ if environ is None else environ).get(PRODUCTION_ENV_VAR))


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker can be told, with defaults for the embedded demo models."""

    base_model: str = "models/base"
    adapters_dir: str = "models/adapters"
    preload_adapters: tuple[str, ...] = (ALL,)  # ("*",) = every adapter in the folder
    adapter_cache_size: int = 4
    merge_adapter: str = ""  # serve only this adapter, merged into the base (fast path)
    device: str = "auto"  # auto = cuda when available, else cpu
    dtype: str = "float32"
    max_payload_bytes: int = RUN_LIMIT_BYTES  # the stricter of RunPod's two request limits
    max_image_bytes: int = 8_000_000
    max_image_side: int = 4096
    max_image_pixels: int = 16_777_216
    max_jpeg_scans: int = 32  # libjpeg writes 10 at most; each scan is one more pass over every pixel
    max_job_pixels: int = 67_108_864  # decoded pixels of one job's images together (header sizes)
    max_worker_pixels: int = 134_217_728  # the same over every job in flight in this worker
    max_decode_ms: int = 10_000  # wall-clock budget for decoding one job's images
    max_batch: int = 64
    # Image sources besides base64 (worker/sources.py); both off unless the operator opts in.
    input_root: str = ""  # {"path": ...} items are read only under this folder, e.g. /runpod-volume
    url_allowlist: tuple[str, ...] = ()  # {"url": ...} items only from these hosts (exact or *.suffix)
    url_allow_http: bool = False  # https only unless set
    url_allow_networks: tuple[str, ...] = ()  # CIDRs fetched although private/loopback (tests: 127.0.0.0/8)
    url_connect_timeout_ms: int = 3000
    url_timeout_ms: int = 15000  # one fetch, redirects and body included; every read waits at most what is left
    max_output_bytes: int = 18_000_000  # margin under RunPod's ~20 MB result limit
    # > 1: async handler, concurrent jobs micro-batched into one forward. On RunPod it is also the
    # throughput cap: the SDK's JobScaler takes at most this many jobs, then pauses 1 s (README).
    concurrency: int = 64
    max_batch_wait_ms: int = 5  # how long a micro-batch waits for more jobs after its first
    max_jobs_in_flight: int = 0  # 0 = the concurrency
    max_queued_images: int = 1024
    rss_ceiling_mb: int = 0  # 0 = off; above it the worker asks RunPod to recycle it
    cuda_cache_limit_mb: int = 2048
    progress_min_images: int = 32  # production mode: jobs this large report progress; 0 = never
    progress_interval_ms: int = 1000  # at most one progress update per job this often
    warmup: bool = True
    log_level: str = "INFO"
    autocast: str = "off"  # float16 / bfloat16: mixed-precision forward (worker/acceleration.py)
    channels_last: str = "auto"  # auto = CNNs on CUDA; on / off force it
    compile: bool = False  # torch.compile the model at startup (longer start, faster forward)
    decode_threads: int = 0  # threads decoding a job's images in parallel; 0 = one per CPU
    # on: decode reduced (JPEG DCT scaling, Image.reduce) to >= 2x the resize's target; pixels then
    # differ slightly from the model's processor (measured in README), so off unless chosen.
    fast_decode: str = "off"
    # The served task (worker/tasks, transformers' pipeline names); empty = from config.json's architectures.
    task: str = ""

    def __post_init__(self) -> None:
        positive = (
            "adapter_cache_size",
            "max_payload_bytes",
            "max_image_bytes",
            "max_image_side",
            "max_image_pixels",
            "max_jpeg_scans",
            "max_job_pixels",
            "max_worker_pixels",
            "max_decode_ms",
            "max_batch",
            "max_output_bytes",
            "concurrency",
            "max_queued_images",
            "url_connect_timeout_ms",
            "url_timeout_ms",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "max_jobs_in_flight",
            "rss_ceiling_mb",
            "cuda_cache_limit_mb",
            "max_batch_wait_ms",
            "decode_threads",
            "progress_min_images",
            "progress_interval_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_payload_bytes > RUNSYNC_LIMIT_BYTES:
            raise ConfigError(f"max_payload_bytes over RunPod's {RUNSYNC_LIMIT_BYTES} byte /runsync limit")
        if self.max_output_bytes < ERROR_BODY_MAX_BYTES:
            raise ConfigError(f"max_output_bytes must be >= {ERROR_BODY_MAX_BYTES} (an error answer must fit)")
        if self.max_output_bytes > RESULT_LIMIT_BYTES:
            raise ConfigError(f"max_output_bytes over RunPod's {RESULT_LIMIT_BYTES} byte result limit")
        # Limits that contradict each other would refuse valid jobs forever (as RATE_LIMITED).
        for small, large in (("max_batch", "max_queued_images"), ("max_job_pixels", "max_worker_pixels")):
            if getattr(self, large) < getattr(self, small):
                raise ConfigError(
                    f"{large} ({getattr(self, large)}) is below {small} ({getattr(self, small)}): "
                    "one valid job would be refused forever"
                )
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError(
                f"{ENV_VARS['device']}={self.device!r}: not a torch device this worker serves on "
                "(auto, cpu, cuda, cuda:N or mps)"
            )
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.autocast not in ("off", "float16", "bfloat16"):
            raise ConfigError(f"autocast must be off, float16 or bfloat16, got {self.autocast!r}")
        if self.channels_last not in ("auto", "on", "off"):
            raise ConfigError(f"channels_last must be auto, on or off, got {self.channels_last!r}")
        if self.fast_decode not in ("off", "on"):
            raise ConfigError(f"fast_decode must be off or on, got {self.fast_decode!r}")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        self._check_url_rules()
        for name in (*self.preload_adapters, *([self.merge_adapter] if self.merge_adapter else [])):
            if name != ALL and not is_adapter_name(name):
                raise ConfigError(f"invalid adapter name {name!r}")

    def _check_url_rules(self) -> None:
        from worker.source_rules import parse_host_pattern, parse_network

        try:
            for pattern in self.url_allowlist:
                parse_host_pattern(pattern)
            for network in self.url_allow_networks:
                parse_network(network)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def jobs_in_flight_limit(self) -> int:
        return self.max_jobs_in_flight or self.concurrency

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerConfig:
        """Build the config from FASTBACKEND_* variables; unset ones keep their defaults.

        Raises:
            ConfigError: a value does not parse or is out of range; names the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            var = ENV_VARS[f.name]
            if var not in env:
                continue
            raw = env[var].strip()
            try:
                if f.type.startswith("tuple"):  # comma lists
                    values[f.name] = tuple(n.strip() for n in raw.split(",") if n.strip())
                elif f.type == "int":
                    values[f.name] = int(raw)
                elif f.type == "bool":
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(raw)
                    values[f.name] = raw.lower() in ("1", "true", "yes")
                else:
                    values[f.name] = raw.upper() if f.name == "log_level" else raw
            except ValueError:
                raise ConfigError(f"{var}={raw!r}: expected {f.type}") from None
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from the FASTBACKEND_* environment)") from None


ENV_VARS: dict[str, str] = {f.name: f"{ENV_PREFIX}{f.name.upper()}" for f in fields(WorkerConfig)}
