"""Static rules about how the worker starts: sources, imports, start(), main guard, local testing."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from fastbackend.check import checklist as R
from fastbackend.check.analysis import Analysis
from fastbackend.check.resolve import External
from fastbackend.check.source import display_path, resolve_from
from fastbackend.check.syntax import own_nodes
from fastbackend.paths import import_root


def check_sources(a: Analysis) -> None:
    """No syntax or import errors in the project code the handler pulls in."""
    for problem in a.project.problems:
        rule_id = "syntax-error" if problem.kind == "syntax" else "import-error"
        a.add(rule_id, problem.path, problem.line, problem.message)
    for module in list(a.project.modules.values()):
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom):
                _check_from_import(a, module, node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    for i in range(1, len(parts)):
                        parent, dotted = ".".join(parts[:i]), ".".join(parts[: i + 1])
                        if (
                            a.project.is_local_package(parent)
                            and not a.project.find(dotted)
                            and not a.project.is_local_package(dotted)
                        ):
                            a.add(
                                "import-error", module.path, node.lineno, f"`import {alias.name}`: no module {dotted}"
                            )
                            break
    if not any(f.rule_id in ("syntax-error", "import-error") for f in a.findings):
        count = len(a.project.modules)
        a.ok(
            R.NO_SOURCE_ERRORS,
            a.project.handler,
            1,
            f"{count} project module{'s' * (count != 1)} parsed, imports between them resolve",
        )


def _check_from_import(a: Analysis, module, node: ast.ImportFrom) -> None:
    base = resolve_from(module, node)
    target = a.project.find(base) if base else None
    if target is None:
        if node.level and base and not a.project.is_local_package(base):
            a.add("import-error", module.path, node.lineno, f"relative import: no module {base}")
        return
    scope = a.resolver.scope(target.tree, target.tree.body)
    if "__getattr__" in scope or any(
        isinstance(n, ast.ImportFrom) and any(x.name == "*" for x in n.names) for n in target.tree.body
    ):
        return
    for alias in node.names:
        name = alias.name
        if (
            name == "*"
            or name in scope
            or a.project.find(f"{base}.{name}")
            or a.project.is_local_package(f"{base}.{name}")
        ):
            continue
        a.add("import-error", module.path, node.lineno, f"`from {base} import {name}`: {base} defines no {name}")


def _block_after(stmts: list[ast.stmt], node: ast.AST) -> list[ast.stmt] | None:
    """The statements after the one holding `node`, in the innermost block that holds it."""
    for index, stmt in enumerate(stmts):
        if any(n is node for n in ast.walk(stmt)):
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(stmt, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    found = _block_after(inner, node)
                    if found is not None:
                        return found
            return stmts[index + 1 :]
    return None


def check_start(a: Analysis) -> None:
    """`runpod.serverless.start` called, `runpod` imported, only under the main guard, nothing after it."""
    entry, module = a.entry, a.project.handler
    if not entry.starts:
        if entry.unreached:
            func, call = entry.unreached[0]
            a.add(
                "no-start",
                func.module,
                call.lineno,
                f"start() is in {func.qualname}(), which nothing under the main guard calls",
            )
        else:
            line = entry.guards[0].lineno if entry.guards else 1
            a.add("no-start", module, line, "no call to `runpod.serverless.start` in the handler or what it imports")
        return
    for start in entry.starts:
        where = start.ctx.module
        via = f" via {' -> '.join(start.chain)}" if start.chain else ""
        if not start.imported:
            a.add("no-runpod-import", where, start.line, "`runpod.serverless.start` with no `import runpod`")
        if not start.guarded:
            a.add(
                "start-without-main-guard",
                where,
                start.line,
                f"start() runs on import{via}: importing the module starts a worker",
            )
    guarded = entry.guarded_start
    if guarded is None:
        return
    via = f" (via {' -> '.join(guarded.chain)})" if guarded.chain else ""
    a.ok(R.START_CALLED, guarded.ctx.module, guarded.line, f"`runpod.serverless.start(...)`{via}")
    if guarded.imported:
        a.ok(R.IMPORT_RUNPOD, guarded.ctx.module, guarded.line, "`runpod` resolves to the installed package")
    if entry.guards and not any(not s.guarded for s in entry.starts):
        a.ok(R.MAIN_GUARD, module, entry.guards[0].lineno, 'start() only under `if __name__ == "__main__":`')
    if entry.config is not None and "handler" not in entry.config_keys and not entry.config_open:
        a.add("no-handler", guarded.ctx.module, guarded.line, 'the start() config has no "handler" key')
    body = guarded.ctx.func.node.body if guarded.ctx.func else [s for g in entry.guards for s in g.body]
    after = [
        s
        for s in (_block_after(body, guarded.call) or [])
        if not isinstance(s, ast.Pass) and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
    ]
    if after:
        a.add(
            "code-after-start",
            guarded.ctx.module,
            after[0].lineno,
            f"`{ast.unparse(after[0]).splitlines()[0][:70]}` runs only after the worker stops",
        )


def test_input_candidates(handler_path: Path) -> list[Path]:
    """Where a test job is looked for: `<stem>.test_input.json` or `test_input.json` beside the
    handler (a folder of several handlers gives each its own), then the project root."""
    folder = handler_path.parent
    found = [
        folder / f"{handler_path.stem}.test_input.json",
        folder / "test_input.json",
        import_root(handler_path) / "test_input.json",
    ]
    return list(dict.fromkeys(found))


def find_test_input(handler_path: Path) -> Path | None:
    return next((p for p in test_input_candidates(handler_path) if p.is_file()), None)


def load_test_job(path: Path) -> tuple[dict | None, int, str]:
    """(job, error line, error) for a test input file."""
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        return None, exc.lineno, f"not JSON: {exc.msg}"
    except (OSError, UnicodeDecodeError) as exc:
        return None, 1, f"unreadable: {exc}"
    if not isinstance(job, dict) or "input" not in job:
        return None, 1, 'not a job: expected a JSON object with an "input" key'
    return job, 0, ""


def _argv_uses(a: Analysis) -> list[tuple[object, ast.AST, str]]:
    found = []
    units = [(stmts, ctx) for stmts, ctx in a.start_code()] + [(s, c) for s, c, _ in a.import_code()]
    seen: set[int] = set()
    for stmts, ctx in units:
        for node in own_nodes(list(stmts)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "parse_args"
                and not node.args
                and not node.keywords
            ):
                found.append((ctx.module, node, "`parse_args()` rejects RunPod's flags (`--test_input` ...)"))
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "argv"
                and isinstance(a.resolver.resolve(node, ctx), External)
                and a.resolver.dotted(node, ctx) == "sys.argv"
            ):
                found.append((ctx.module, node, "reads or rewrites `sys.argv`, which holds RunPod's flags"))
    return found


def check_local_testing(a: Analysis) -> None:
    """A valid test job for `--test_input`, and no own command-line parsing that would reject RunPod's flags."""
    handler_path = a.project.handler.path
    anchor = a.entry.guards[0].lineno if a.entry.guards else 1
    path = find_test_input(handler_path)
    if path is None:
        places = [display_path(p) for p in test_input_candidates(handler_path)]
        a.add("no-test-input", a.project.handler, anchor, f"no test job found (looked for {', '.join(places)})")
    else:
        job, line, error = load_test_job(path)
        if job is None:
            a.add("bad-test-input", path, line, error)
        else:
            a.ok(R.LOCAL_TESTING, path, 1, f"test job in {path.name} (`--test_input`, `--rp_serve_api` ready)")
    for module, node, what in _argv_uses(a)[:3]:
        a.add("argv-parsing", module, node.lineno, what)
