"""Stage 1: load the handler module and every project module it imports, transitively.

Only modules under the project's import roots are read (the handler's package root, its own
folder, the current directory); anything else (the standard library, site-packages) stays an
external name. Nothing is imported or executed: files are parsed with `ast`.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastbackend.check.model import CheckError
from fastbackend.paths import import_root, module_name

MAX_MODULES = 200  # bounds the walk on a large project; the handler's closure is far smaller
MAX_FILE_BYTES = 2_000_000
_MAGIC = re.compile(r"^\s*[!%]")


@dataclass(frozen=True, eq=False)  # identity: modules key memo tables, hashing their text would be slow
class Module:
    """One parsed source file; `name` is its dotted import name."""

    name: str
    path: Path
    tree: ast.Module
    lines: tuple[str, ...]
    is_package: bool

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class SourceProblem:
    """A project module that is referenced but cannot be used (does not parse, or is missing)."""

    kind: str  # "syntax" | "import"
    path: Path
    line: int
    message: str


@dataclass
class Project:
    """The handler module and its project-local import closure."""

    roots: tuple[Path, ...]
    handler: Module
    modules: dict[str, Module] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)
    _missing: set[str] = field(default_factory=set)

    def find(self, dotted: str) -> Module | None:
        """The local module `dotted`, loading it on first use; None when it is not project code."""
        if dotted in self.modules:
            return self.modules[dotted]
        if dotted in self._missing or not dotted or len(self.modules) >= MAX_MODULES:
            return None
        path = locate(dotted, self.roots)
        if path is None:
            self._missing.add(dotted)
            return None
        try:
            module = parse_module(dotted, path)
        except (RecursionError, MemoryError):
            self._missing.add(dotted)
            self.problems.append(SourceProblem("syntax", path, 1, "nested too deeply for Python's parser"))
            return None
        except SyntaxError as exc:
            self._missing.add(dotted)
            text = path.read_text(encoding="utf-8", errors="replace")
            magic = _magic_line(text, exc.lineno)
            message = f"`{magic[1]}` is a notebook magic (a run-time install), not Python" if magic else exc.msg
            self.problems.append(SourceProblem("syntax", path, magic[0] if magic else _error_line(text, exc), message))
            return None
        self.modules[dotted] = module
        return module

    def is_local_package(self, dotted: str) -> bool:
        """True when `dotted` names a project folder (a package, or a namespace package)."""
        parts = dotted.split(".")
        return any((root.joinpath(*parts)).is_dir() for root in self.roots)


def locate(dotted: str, roots: tuple[Path, ...]) -> Path | None:
    parts = dotted.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    for root in roots:
        base = root.joinpath(*parts)
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
    return None


def parse_module(name: str, path: Path) -> Module:
    """Parse one file. Raises SyntaxError (with lineno) when it is not Python."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SyntaxError(f"file over {MAX_FILE_BYTES} bytes, not analysed", (str(path), 1, 0, ""))
    text = path.read_text(encoding="utf-8", errors="replace")
    tree = ast.parse(text, filename=str(path))
    return Module(name, path, tree, tuple(text.splitlines()), path.name == "__init__.py")


def _error_line(text: str, exc: SyntaxError) -> int:
    """The line of a syntax error; Python gives none for a NUL byte, so find it."""
    if exc.lineno:
        return exc.lineno
    return text.count("\n", 0, text.index("\0")) + 1 if "\0" in text else 1


def _magic_line(text: str, error_line: int | None) -> tuple[int, str] | None:
    """The notebook magic (`!pip ...`, `%pip ...`) that made a file unparseable, if any."""
    lines = text.splitlines()
    if error_line and 0 < error_line <= len(lines) and _MAGIC.match(lines[error_line - 1]):
        return error_line, lines[error_line - 1].strip()
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("!"):
            return number, line.strip()
    return None


def load_project(handler_path: Path, cwd: Path | None = None) -> Project:
    """Parse the handler and everything it imports from the project.

    Raises:
        CheckError: the path is missing, not a file, or does not parse (one line, with file:line).
    """
    path = handler_path
    if not path.exists():
        raise CheckError(f"{handler_path}: no such file (pass the handler module's path; default exported/handler.py)")
    if not path.is_file():
        raise CheckError(f"{handler_path}: not a file (pass the handler module, e.g. handler.py)")
    path = path.resolve()
    root = import_root(path)
    cwd = (cwd or Path.cwd()).resolve()
    roots = tuple(dict.fromkeys(r for r in (root, path.parent, cwd) if "site-packages" not in r.parts))
    name = module_name(path, root)
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except UnicodeDecodeError:
        raise CheckError(f"{handler_path}: not a UTF-8 text file; pass the handler's Python source") from None
    except (RecursionError, MemoryError):
        raise CheckError(
            f"{handler_path}: nested too deeply for Python's parser (an expression of thousands of terms?); "
            "the worker cannot start"
        ) from None
    except SyntaxError as exc:
        magic = _magic_line(text, exc.lineno)
        if magic:
            raise CheckError(
                f"{handler_path}:{magic[0]}: not Python: `{magic[1]}` is a notebook magic (a run-time "
                "install); declare the dependency in the image instead"
            ) from None
        line = _error_line(text, exc)
        raise CheckError(f"{handler_path}:{line}: syntax error: {exc.msg}; the worker cannot start") from None
    handler = Module(name, path, tree, tuple(text.splitlines()), path.name == "__init__.py")
    project = Project(roots, handler, {name: handler})
    _walk_imports(project)
    return project


def imported_names(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Every dotted module name an import statement may load (absolute, resolved)."""
    if isinstance(node, ast.Import):
        names = []
        for alias in node.names:
            parts = alias.name.split(".")
            names += [".".join(parts[: i + 1]) for i in range(len(parts))]
        return names
    base = resolve_from(module, node)
    if base is None:
        return []
    return [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]


def resolve_from(module: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module name of a `from X import ...` (None when a relative import leaves the root)."""
    if not node.level:
        return node.module
    package = module.package.split(".") if module.package else []
    if node.level - 1 > len(package):
        return None
    base = package[: len(package) - (node.level - 1)]
    if node.module:
        base += node.module.split(".")
    return ".".join(base) if base else None


def _walk_imports(project: Project) -> None:
    queue = [project.handler]
    seen = {project.handler.name}
    while queue:
        module = queue.pop(0)
        for node in ast.walk(module.tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom) and node.level and resolve_from(module, node) is None:
                project.problems.append(
                    SourceProblem("import", module.path, node.lineno, "relative import beyond the top-level package")
                )
                continue
            for dotted in imported_names(module, node):
                if dotted in seen:
                    continue
                seen.add(dotted)
                found = project.find(dotted)
                if found is not None:
                    queue.append(found)


def display_path(path: Path) -> str:
    """A path as the report shows it: relative to the current directory when under it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)
