"""Worker configuration: immutable, validated, read from the environment in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

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


# runpod's own bucket variables (runpod.serverless.utils.rp_upload reads them): with all three set, a
# segmentation job may ask for `"output": "upload"`; without them nothing is uploaded.
BUCKET_ENV_VARS = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")


def bucket_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True where runpod's BUCKET_* variables are all set: uploads are on."""
    env = os.environ if environ is None else environ
    return all(env.get(name, "").strip() for name in BUCKET_ENV_VARS)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


@dataclass(frozen=True)
class SettingDoc:
    """What the reference, the Hub's form and the validation know of one setting besides its default.

    `doc` is the one description (docs/reference/configuration.md and .runpod/hub.json are generated
    from it by `fastbackend reference`); `choices`, `minimum` and `maximum` are enforced on construction.
    """

    doc: str
    label: str = ""  # the Hub form's field name; empty = made from the field's name
    advanced: bool = True  # the Hub form hides advanced settings under a fold
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


def setting(default: Any, doc: str, **spec: Any) -> Any:
    """A WorkerConfig field: its default and its description, in one place (SettingDoc's fields as keywords)."""
    return field(default=default, metadata={"setting": SettingDoc(doc, **spec)})


def describe(f: Field) -> SettingDoc:
    """The SettingDoc of a WorkerConfig field; a field declared without `setting()` has an empty `doc`."""
    return f.metadata.get("setting") or SettingDoc("")


def _one_of(choices: tuple[str, ...]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _check_bounds(name: str, value: Any, spec: SettingDoc) -> None:
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{name} must be {_one_of(spec.choices)}, got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{name} must be >= {spec.minimum}, got {value}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"{name} must be <= {spec.maximum}, got {value}")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker can be told, with defaults for the embedded demo models.

    Each field is a `setting(default, description, ...)`: a new one needs only that, then
    `fastbackend reference` to regenerate the configuration page and the Hub's form.
    """

    base_model: str = setting(
        "models/base",
        "Folder with the base model (config.json + *.safetensors, as save_pretrained writes them) or a hub id "
        "served from the local hub cache. The default is the model baked into the image; for your own, a folder "
        "on the network volume, e.g. /runpod-volume/models/base.",
        label="Base model",
        advanced=False,
    )
    adapters_dir: str = setting(
        "models/adapters",
        "One subfolder per LoRA adapter (adapter_config.json + adapter_model.safetensors); only these names can "
        "be asked for. E.g. /runpod-volume/models/adapters.",
        label="Adapters folder",
        advanced=False,
    )
    preload_adapters: tuple[str, ...] = setting(
        (ALL,),
        "Comma-separated adapter names loaded at startup; * = all, empty = none (loaded on first use).",
        label="Preloaded adapters",
        advanced=False,
    )
    adapter_cache_mb: float = setting(
        0,
        "Megabytes of loaded adapters kept on the device, least recently used dropped first; 0 = room for 128 of "
        "the largest adapter seen (at least 256 MB), at most a tenth of the device's free memory.",
        label="Adapter cache (MB)",
        minimum=0,
        advanced=False,
    )
    adapter_recheck_ms: int = setting(
        1000,
        "A served adapter's folder is re-checked this often for a new version (then loaded) or its removal.",
        label="Adapter recheck (ms)",
        minimum=0,
    )
    mix_adapters: bool = setting(
        True,
        "Jobs for different adapters (and the base) share one forward through peft's adapter_names where peft "
        "can mix them; health says where it cannot.",
        label="Mix adapters in a batch",
    )
    merge_adapter: str = setting(
        "",
        "Serve only this adapter, merged into the base (merge_and_unload: the fastest path); empty = serve the "
        "base and every adapter.",
        label="Merged adapter",
    )
    device: str = setting(
        "auto",
        "Where the model runs: auto (cuda when a GPU is visible, else cpu), cpu, cuda, cuda:N or mps. A device "
        "this machine lacks stops setup in one line naming the variable.",
        label="Device",
    )
    dtype: str = setting(
        "float32",
        "The model weights' dtype; float16 / bfloat16 load them in half precision.",
        label="Precision",
        choices=("float32", "float16", "bfloat16"),
        advanced=False,
    )
    max_payload_bytes: int = setting(
        RUN_LIMIT_BYTES,
        "Job inputs over this size are refused with PAYLOAD_TOO_LARGE. RunPod accepts 10 MB on /run and 20 MB "
        "on /runsync; raise to 20000000 only for /runsync clients.",
        label="Max request bytes",
        minimum=1,
        maximum=RUNSYNC_LIMIT_BYTES,
    )
    max_image_bytes: int = setting(8_000_000, "Largest encoded image accepted.", label="Max image bytes", minimum=1)
    max_image_side: int = setting(
        4096,
        "Largest width or height, checked from the image header before decoding.",
        label="Max image side",
        minimum=1,
    )
    max_image_pixels: int = setting(
        16_777_216,
        "Largest width x height, checked from the header before decoding (decompression bombs).",
        label="Max image pixels",
        minimum=1,
    )
    max_jpeg_scans: int = setting(
        32,
        "Progressive JPEGs with more scans are refused with IMAGE_TOO_LARGE before decoding (each scan is one "
        "more pass over every pixel; libjpeg writes at most 10).",
        label="Max JPEG scans",
        minimum=1,
    )
    max_job_pixels: int = setting(
        67_108_864,
        "The decoded pixels of one job's images together, from their headers, before decoding; over it: "
        "IMAGE_TOO_LARGE.",
        label="Max pixels per job",
        minimum=1,
    )
    max_worker_pixels: int = setting(
        134_217_728,
        "The decoded pixels of every job in flight in this worker together; over it a new job is refused with "
        "RATE_LIMITED. At least the pixels per job.",
        label="Max pixels per worker",
    )
    max_decode_ms: int = setting(
        10_000,
        "Wall-clock time for decoding one job's images; past it, with images left, IMAGE_TOO_LARGE.",
        label="Decode time budget (ms)",
        minimum=1,
    )
    max_batch: int = setting(
        64, "More images in one job are refused with BATCH_TOO_LARGE.", label="Max images per job", minimum=1
    )
    # Image sources besides base64 (worker/sources.py); both off unless the operator opts in.
    input_root: str = setting(
        "",
        '{"path": ...} images are read only under this folder (e.g. /runpod-volume); empty = path images off.',
        label="Input root for path images",
    )
    url_allowlist: tuple[str, ...] = setting(
        (),
        'Comma list of hosts {"url": ...} images may come from (exact names or *.suffix, e.g. '
        "images.example.com,*.cdn.example.org); empty = URL images off.",
        label="URL image hosts",
    )
    url_allow_http: bool = setting(False, "Also fetch http:// URLs (https only by default).", label="Allow http URLs")
    url_allow_networks: tuple[str, ...] = setting(
        (),
        "Comma list of CIDRs fetched although private, loopback or link-local (refused by default; the tests "
        "use 127.0.0.0/8).",
        label="Private networks allowed for URLs",
    )
    url_connect_timeout_ms: int = setting(
        3000, "Connect timeout of one URL image fetch.", label="URL connect timeout (ms)", minimum=1
    )
    url_timeout_ms: int = setting(
        15000,
        "Whole-fetch limit of one URL image: lookup, connect, redirects and every read under one monotonic deadline.",
        label="URL fetch timeout (ms)",
        minimum=1,
    )
    url_job_timeout_ms: int = setting(
        30000,
        "All URL fetches of one job together; the job's first failing image stops the rest.",
        label="URL fetch timeout per job (ms)",
        minimum=1,
    )
    # Bytes read from url/path images (base64 is bounded by max_payload_bytes): one job's, and all
    # jobs' in flight in this worker. A job holds them until it is answered. No minimum of their own:
    # __post_init__ keeps them at least max_image_bytes.
    max_job_source_bytes: int = setting(
        134_217_728,
        "Bytes one job's url/path images may bring together (IMAGE_TOO_LARGE over it); at least the image byte cap.",
        label="URL/path bytes per job",
    )
    max_worker_source_bytes: int = setting(
        536_870_912,
        "Bytes of url/path images held by all jobs in flight (RATE_LIMITED over it); at least the per-job budget.",
        label="URL/path bytes per worker",
    )
    max_output_bytes: int = setting(
        18_000_000,
        "Results over this size fail with OUTPUT_TOO_LARGE instead of failing to post (RunPod's limit is about "
        "20 MB); at least the size of an error answer.",
        label="Max result bytes",
        minimum=ERROR_BODY_MAX_BYTES,
        maximum=RESULT_LIMIT_BYTES,
    )
    concurrency: int = setting(
        64,
        "Jobs one worker runs at once (over 1, an async handler overlaps them and micro-batches predict jobs per "
        "adapter). On RunPod it caps throughput: the SDK takes at most this many jobs, then pauses 1 s, so a "
        "worker answers at most about this many jobs per second.",
        label="Concurrency",
        minimum=1,
    )
    max_batch_wait_ms: int = setting(
        5,
        "With concurrency over 1: how long a micro-batch waits for more jobs after its first; it closes at once "
        "when no job in flight can join.",
        label="Max batch wait (ms)",
        minimum=0,
    )
    max_jobs_in_flight: int = setting(
        0,
        "Over this many running jobs a new one is refused with RATE_LIMITED; 0 = the concurrency.",
        label="Max jobs in flight",
        minimum=0,
    )
    max_queued_images: int = setting(
        1024,
        "Over this many images in running jobs (or over FASTBACKEND_MAX_WORKER_PIXELS) a new job waits for room, "
        "then is refused with RATE_LIMITED. At least the max images per job.",
        label="Max queued images",
    )
    max_admission_wait_ms: int = setting(
        60000,
        "How long a job over a cap (jobs, queued images, decode pixels) waits for room, without its CPU slot, "
        "before RATE_LIMITED; 0 = refuse at once. On RunPod a job taken from the queue and refused is a FAILED job.",
        label="Max admission wait (ms)",
        minimum=0,
    )
    rss_ceiling_mb: int = setting(
        0,
        "Above this resident memory the worker asks RunPod to recycle it (refresh_worker); 0 = off.",
        label="Memory ceiling (MB)",
        minimum=0,
    )
    cuda_cache_limit_mb: int = setting(
        2048,
        "Above this much cached CUDA memory the cache is emptied after a job; 0 = always.",
        label="CUDA cache limit (MB)",
        minimum=0,
    )
    progress_min_images: int = setting(
        32,
        "Production mode: jobs with at least this many images report progress (done/total/stage) on /status "
        "while they run; 0 = never.",
        label="Progress from (images)",
        minimum=0,
    )
    progress_interval_ms: int = setting(
        1000, "At most one progress update per job this often.", label="Progress interval (ms)", minimum=0
    )
    warmup: bool = setting(
        True, "Run one forward pass at startup, before taking jobs, so the first job is not slow.", label="Warm-up"
    )
    log_level: str = setting(
        "INFO", "Level of the JSON log lines.", label="Log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    autocast: str = setting(
        "off",
        "Mixed-precision forward pass (torch.autocast, worker/acceleration.py): float16 or bfloat16, with float32 "
        "weights; off keeps the weights' dtype.",
        label="Autocast",
        choices=("off", "float16", "bfloat16"),
    )
    channels_last: str = setting(
        "auto",
        "NHWC memory format for the model: auto = CNNs (ConvNeXt, ResNet) on CUDA; on / off force it.",
        label="Channels last",
        choices=("auto", "on", "off"),
    )
    compile: bool = setting(
        False,
        "torch.compile the model at startup: a longer cold start for a faster forward. Best with a merged adapter "
        "or none (switching adapters recompiles).",
        label="torch.compile",
    )
    decode_threads: int = setting(
        0,
        "Threads decoding and preprocessing a job's images in parallel; 0 = one per CPU.",
        label="Decode threads",
        minimum=0,
    )
    # on: decode reduced (JPEG DCT scaling, Image.reduce) to >= 2x the resize's target; pixels then differ
    # slightly from the model's processor (docs/explanation/decoding.md measures it), so off unless chosen.
    fast_decode: str = setting(
        "off",
        "on: decode photos reduced (JPEG DCT scaling, Image.reduce) to at least twice the model's input size, "
        "several times faster on large JPEGs; pixels then differ slightly from the model's processor. off: exact.",
        label="Fast decode",
        choices=("off", "on"),
    )
    upload_bucket: str = setting(
        "",
        'The bucket `"output": "upload"` puts answers in (segmentation masks), through runpod\'s rp_upload with '
        "its BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (uploads are off without "
        "them); empty = rp_upload's default name (the month, MM-YY).",
        label="Upload bucket",
    )
    task: str = setting(
        "",
        "The served task, by transformers' pipeline name (image-classification, image-feature-extraction, ...); "
        "empty: from the base's config.json architectures (docs/tasks/adding-a-task.md).",
        label="Task",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_bounds(f.name, getattr(self, f.name), describe(f))
        # Limits that contradict each other would refuse valid jobs forever (as RATE_LIMITED).
        for small, large in (
            ("max_batch", "max_queued_images"),
            ("max_job_pixels", "max_worker_pixels"),
            ("max_image_bytes", "max_job_source_bytes"),
            ("max_job_source_bytes", "max_worker_source_bytes"),
        ):
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
                elif f.type == "float":
                    values[f.name] = float(raw)
                    if values[f.name] != values[f.name]:  # NaN passes every bound
                        raise ValueError(raw)
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
