"""Static rules about what runs per job and at start: setup timing, installs, async, memory."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from fastbackend.check import checklist as R
from fastbackend.check.analysis import Analysis
from fastbackend.check.flow import Step
from fastbackend.check.resolve import Ctx, Func
from fastbackend.check.source import Module, display_path
from fastbackend.check.syntax import decorator_names, own_calls, own_nodes

HEAVY_METHODS = frozenset(
    {
        "from_pretrained",
        "from_single_file",
        "load_lora_weights",
        "load_adapter",
        "hf_hub_download",
        "snapshot_download",
        "load_dataset",
    }
)
HEAVY_CALLS = frozenset(
    {
        "torch.load",
        "torch.hub.load",
        "torch.compile",
        "torch.jit.load",
        "safetensors.torch.load_file",
        "safetensors.safe_open",
        "transformers.pipeline",
        "urllib.request.urlretrieve",
        "joblib.load",
        "onnxruntime.InferenceSession",
        "tensorflow.keras.models.load_model",
        "keras.models.load_model",
        "timm.create_model",
        "whisper.load_model",
        "ultralytics.YOLO",
        "spacy.load",
        "sentence_transformers.SentenceTransformer",
        "open_clip.create_model_and_transforms",
    }
)
PROCESS_CALLS = frozenset(
    {
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.Popen",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "os.system",
        "os.popen",
        "os.execv",
        "os.execvp",
        "os.spawnv",
        "os.spawnl",
        "os.posix_spawn",
        "asyncio.create_subprocess_exec",
        "asyncio.create_subprocess_shell",
        "pip.main",
        "pip._internal.main",
        "pip._internal.cli.main.main",
    }
)
BLOCKING_CALLS = frozenset(
    {
        "time.sleep",
        "urllib.request.urlopen",
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "os.system",
    }
)
CLEANUP_CALLS = frozenset({"gc.collect", "resource.getrusage", "tracemalloc.start", "tracemalloc.get_traced_memory"})
CLEANUP_METHODS = frozenset(
    {
        "empty_cache",
        "ipc_collect",
        "memory_allocated",
        "memory_reserved",
        "mem_get_info",
        "max_memory_allocated",
        "memory_stats",
        "memory_info",
        "getrusage",
        "virtual_memory",
    }
)
INSTALL = re.compile(
    r"\b(pip3?|uv|conda|mamba|micromamba|apt-get|apt|apk|yum|dnf|npm|poetry|easy_install)\b"
    r".*\b(install|add|sync|upgrade)\b"
)
FLAG = re.compile(r"(?i)(ready|initiali[sz]ed|init_done|inited|loaded|setup|set_up|warm|prepared|booted|environment)")
LAZY_OBJECT = re.compile(r"(?i)(model|pipe|pipeline|tokenizer|processor|session|engine|predictor|_instance)")
CACHE = re.compile(r"(?i)cache")
# Project functions named for one-time setup: called per job, they are setup in the handler.
SETUP_NAME = re.compile(
    r"(?i)_*((setup|set_up|initiali[sz]e|init|bootstrap|prepare)"
    r"(_(env|environment|model|models|worker|pipeline|runtime))?"
    r"|install(_\w+)?|(download|load)_(model|models|weights|pipeline|checkpoint|base_model)s?)"
)


def _units(a: Analysis) -> Iterator[tuple[Module, list[ast.stmt], Ctx]]:
    """Every function body and module top level in the closure: for rules about anything reachable."""
    for module in list(a.project.modules.values()):
        yield module, module.tree.body, Ctx(module)
        for func in a.resolver.functions(module):
            yield module, func.node.body, Ctx(module, func)


def _name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def heavy(a: Analysis, call: ast.Call, ctx: Ctx) -> str | None:
    """A call that loads a model, weights or a dataset, or downloads one: what it is, or None."""
    if _name(call) in HEAVY_METHODS:
        return ast.unparse(call.func)  # by convention a loader, whoever defines it
    target = a.resolver.resolve(call.func, ctx)
    if isinstance(target, Func):
        return None  # other project code is followed, not judged by its name
    dotted = a.resolver.dotted(call.func, ctx) or ""
    return dotted if dotted in HEAVY_CALLS else None


def _flag(test: ast.AST) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            name = getattr(node.operand, "id", None) or getattr(node.operand, "attr", None)
            if name and (FLAG.search(name) or LAZY_OBJECT.search(name)):
                return True
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Is, ast.Eq)):
            name = getattr(node.left, "id", None) or getattr(node.left, "attr", None)
            other = node.comparators[0]
            if (
                name
                and isinstance(other, ast.Constant)
                and other.value in (None, False)
                and (FLAG.search(name) or LAZY_OBJECT.search(name))
            ):
                return True
    return False


def _setup_calls(a: Analysis, body: list[ast.stmt], ctx: Ctx) -> list[ast.Call]:
    """Calls in a lazily-run block that do setup: project functions or heavy loads (not raise/return)."""
    skip = {id(n) for s in own_nodes(body) if isinstance(s, (ast.Raise, ast.Return)) for n in ast.walk(s)}
    return [
        c
        for c in own_calls(body)
        if id(c) not in skip and (isinstance(a.resolver.resolve(c.func, ctx), Func) or heavy(a, c, ctx))
    ]


def _cached(func: Func) -> bool:
    return bool(CACHE.search(func.qualname)) or bool(
        decorator_names(func.node) & {"lru_cache", "cache", "cached_property"}
    )


def check_setup(a: Analysis) -> None:
    """Setup timing: nothing heavy per job; installs nowhere; async handlers do not block."""
    _setup_in_handler(a)
    _installs(a)
    _at_import(a)
    _async(a)
    _cleanup(a)


def _behind_cache(func: Func, step: Step | None) -> bool:
    return _cached(func) or bool(step) and any(_cached(s.func) for s in step.chain())


def _setup_in_handler(a: Analysis) -> None:
    """Three ways setup ends up on a job, reported once each, outermost first: a ready-flag block,
    a call to a project function named for setup, a loader call."""
    if a.handler is None:
        return
    code = a.handler_code(may=False)
    absorbed: set[int] = set()  # call sites already reported (through them, nothing is reported again)
    flagged = 0

    def report(module: Module, line: int, detail: str, where: str, func: Func, step: Step | None) -> None:
        nonlocal flagged
        if _behind_cache(func, step):
            a.notes.append(
                f"on-demand {where} behind a cache at {display_path(module.path)}:{line}: the first "
                "job for each item pays it"
            )
            return
        flagged += 1
        a.add("setup-in-handler", module, line, detail)

    def reached_through_reported(step: Step | None) -> bool:
        return bool(step) and any(id(s.call) in absorbed for s in step.chain())

    for func, step in code:
        ctx = Ctx(func.module, func)
        for node in own_nodes(func.node.body):
            if isinstance(node, ast.If) and _flag(node.test) and not reached_through_reported(step):
                calls = _setup_calls(a, node.body, ctx)
                if calls:
                    absorbed |= {id(c) for c in calls}
                    names = ", ".join(f"{ast.unparse(c.func)}()" for c in calls[:3])
                    report(
                        func.module,
                        node.lineno,
                        f"`if {ast.unparse(node.test)}:` runs {names} on a job, behind a ready flag",
                        "setup",
                        func,
                        step,
                    )
    for func, step in code:
        if step and SETUP_NAME.fullmatch(func.node.name) and not reached_through_reported(step):
            absorbed.add(id(step.call))
            report(
                step.module,
                step.call.lineno,
                f"`{func.qualname}()` runs on every job ({a.chain(step)})",
                f"{func.qualname}()",
                func,
                step,
            )
    for func, step in code:
        if reached_through_reported(step):
            continue
        ctx = Ctx(func.module, func)
        for call in own_calls(func.node.body):
            what = heavy(a, call, ctx)
            if what and id(call) not in absorbed:
                via = f" ({a.chain(step)})" if step else ""
                report(func.module, call.lineno, f"`{what}(...)` runs on every job{via}", f"`{what}`", func, step)
    if not flagged:
        loads = [
            (m, c, w)
            for stmts, ctx in a.start_code()
            for c in own_calls(stmts)
            for m, w in [(ctx.module, heavy(a, c, ctx))]
            if w
        ]
        detail = (
            f"`{loads[0][2]}(...)` runs at start, before start() ({a.loc(loads[0][0], loads[0][1])})"
            if loads
            else "the handler reaches no model loading, download or environment setup"
        )
        a.ok(R.SETUP_TIMING, a.handler.module, a.handler.node.lineno, detail)


def _strings(call: ast.Call) -> list[str]:
    found = []
    for arg in list(call.args) + [k.value for k in call.keywords]:
        for node in ast.walk(arg):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return found


def _installs(a: Analysis) -> None:
    found = 0
    for module, stmts, ctx in _units(a):
        for call in own_calls(stmts):
            dotted = a.resolver.dotted(call.func, ctx) or ""
            ipython = (
                _name(call) in ("system", "run_line_magic", "getoutput")
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Call)
                and _name(call.func.value) == "get_ipython"
            )
            if dotted not in PROCESS_CALLS and not ipython:
                continue
            command = " ".join(_strings(call))
            shown = ast.unparse(call)[:90]
            if dotted.startswith("pip.") or INSTALL.search(command) or "-m pip" in command:
                a.add("runtime-install", module, call.lineno, f"`{shown}` installs packages at run time")
            else:
                a.add("subprocess", module, call.lineno, f"`{shown}`")
            found += 1
    if not found:
        count = len(a.project.modules)
        a.ok(R.NO_INSTALLS, a.project.handler, 1, f"no pip, subprocess or os.system in {count} module(s)")


def _at_import(a: Analysis) -> None:
    for stmts, ctx, step in a.import_code():
        for call in own_calls(stmts):
            what = heavy(a, call, ctx)
            if what:
                via = (
                    f" (called on import: {' -> '.join(s.func.qualname + '()' for s in step.chain())})" if step else ""
                )
                a.add(
                    "setup-at-import", ctx.module, call.lineno, f"`{what}(...)` runs when the module is imported{via}"
                )


def _async(a: Analysis) -> None:
    h = a.handler
    if h is None or not h.is_async:
        return
    for func, step in a.handler_code(may=False):
        if step and any(s.offloaded for s in step.chain()):
            continue  # runs in a thread: blocking there is the remedy, not the problem
        ctx = Ctx(func.module, func)
        for call in own_calls(func.node.body):
            dotted = a.resolver.dotted(call.func, ctx) or ""
            if dotted in BLOCKING_CALLS or dotted.startswith("requests."):
                a.add(
                    "blocking-in-async",
                    func.module,
                    call.lineno,
                    f"`{ast.unparse(call)[:60]}` blocks the event loop in async {h.qualname}()",
                )
    entry = a.entry
    if entry.config is not None and "concurrency_modifier" not in entry.config_keys and not entry.config_open:
        start = entry.guarded_start
        a.add(
            "async-without-concurrency",
            start.ctx.module if start else h.module,
            start.line if start else h.node.lineno,
            "start() has no `concurrency_modifier`",
        )


def _cleanup(a: Analysis) -> None:
    if a.handler is None:
        return
    for func, _ in a.handler_code(may=True):
        ctx = Ctx(func.module, func)
        for node in own_nodes(func.node.body):
            if isinstance(node, ast.Call):
                dotted = a.resolver.dotted(node.func, ctx) or ""
                if dotted in CLEANUP_CALLS or dotted.startswith("psutil.") or _name(node) in CLEANUP_METHODS:
                    a.ok(
                        R.MEMORY_CLEANUP, func.module, node.lineno, f"`{ast.unparse(node.func)}()` in {func.qualname}()"
                    )
                    return
            if isinstance(node, ast.Constant) and node.value in ("/proc/self/statm", "/proc/self/status"):
                a.ok(R.MEMORY_CLEANUP, func.module, node.lineno, f"reads {node.value} in {func.qualname}()")
                return
    a.add(
        "no-memory-cleanup",
        a.handler.module,
        a.handler.node.lineno,
        "nothing the handler runs frees memory (gc, CUDA cache) or measures it (RSS, CUDA)",
    )
