"""Every `fastbackend ...` and `make ...` line in README, CONTRIBUTING and docs/ is one that works:
each `fastbackend` command parses with the real CLI (an unknown subcommand or flag fails), each
`make` target exists in the Makefile. Code blocks and inline code are both read; the pages
generated from the parser itself (docs/reference/cli.md) are left out."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from fastbackend.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
GENERATED = "<!-- Generated from "
_FENCE = re.compile(r"^```(\w*).*?$\n(.*?)^```", re.S | re.M)
_SHELL = {"bash", "sh", "shell", "console"}
_INLINE = re.compile(r"`([^`\n]+)`")
_FASTBACKEND = re.compile(r"(?:^|[\s(])((?:[\w.-]+/)*bin/fastbackend|fastbackend)\s+(.*)$")
_MAKE = re.compile(r"(?:^|[\s(])make\s+([a-z][\w-]*)")


def documented_pages() -> list[Path]:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if not p.read_text().startswith(GENERATED)]


def command_lines(text: str) -> list[tuple[int, str, bool]]:
    """(line number, text, whole) of each shell line and inline code span that could hold a command.

    `whole` is False for inline code, which may name a command without its required arguments
    (`fastbackend batch` in a sentence); its subcommands and flags must still exist."""
    found = []
    for block in _FENCE.finditer(text):
        if block.group(1) not in _SHELL:
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        body = block.group(2).replace("\\\n", " \n")  # a continued line is read whole, numbered by its start
        for n, line in enumerate(re.sub(r" \n\s*", " ", body).splitlines()):
            found.append((first + n, line, True))
    prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for n, line in enumerate(prose.splitlines(), start=1):
        found += [(n, span, False) for span in _INLINE.findall(line)]
    return found


def fastbackend_argv(line: str) -> list[str] | None:
    """The arguments after `fastbackend` in a documented line, placeholders filled; None if none."""
    match = _FASTBACKEND.search(line)
    if not match:
        return None
    rest = re.split(r"\s(?:#|&&|\|\||\||;)\s|\s&\s*$", " " + match.group(2).strip() + " ")[0]
    rest = rest.replace("<endpoint id>", "abc123")
    rest = re.sub(r"<[^>]*>", "x", rest).replace("[", " ").replace("]", " ").replace("...", " ")
    return shlex.split(rest)


def _unknown_flags(argv: list[str]) -> list[str]:
    """The flags of `fastbackend ARGV` that its (sub)command does not define."""
    parser, rest = build_parser(), list(argv)
    while rest:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or rest[0] not in subs[0].choices:
            break
        parser = subs[0].choices[rest.pop(0)]
    return [t for t in rest if t.startswith("-") and t.split("=")[0] not in parser._option_string_actions]


def parse_error(argv: list[str], whole: bool = True) -> str | None:
    """argparse's message when `fastbackend ARGV` does not parse, else None. Not `whole` (inline
    code naming a command in a sentence): missing required arguments are allowed, unknown flags not."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        message = err.getvalue().strip().splitlines()[-1] if exc.code else ""
        if message and not whole and "arguments are required" in message:
            unknown = _unknown_flags(argv)
            return f"unrecognized arguments: {' '.join(unknown)}" if unknown else None
        return message or None
    return None


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def documented_commands() -> tuple[list[tuple[str, list[str], bool]], list[tuple[str, str]]]:
    fastbackend, make = [], []
    for page in documented_pages():
        rel = page.relative_to(ROOT)
        for n, line, whole in command_lines(page.read_text()):
            argv = fastbackend_argv(line)
            if argv:
                fastbackend.append((f"{rel}:{n}", argv, whole))
            make += [(f"{rel}:{n}", target) for target in _MAKE.findall(line)]
    return fastbackend, make


def test_the_checker_finds_the_documented_commands():
    fastbackend, make = documented_commands()
    subcommands = {argv[0] for _, argv, _ in fastbackend}
    assert {"export", "reference", "pipeline", "invoke", "batch", "doctor", "check", "serve"} <= subcommands
    assert {"run", "test", "docs", "image", "bench"} <= {target for _, target in make}


def test_every_documented_fastbackend_command_parses():
    failures = [
        f"{where}: fastbackend {shlex.join(argv)}: {err}"
        for where, argv, whole in documented_commands()[0]
        if (err := parse_error(argv, whole))
    ]
    assert not failures, "documented commands the CLI refuses:\n" + "\n".join(failures)


def test_every_documented_make_target_exists():
    targets = makefile_targets()
    missing = [f"{where}: make {target}" for where, target in documented_commands()[1] if target not in targets]
    assert not missing, "documented make targets the Makefile lacks:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "line, refused",
    [
        (".venv/bin/fastbackend export --check", False),
        ("FASTBACKEND_BASE_MODEL=m .venv/bin/fastbackend doctor   # the configured base", False),
        (".venv/bin/fastbackend invoke digit.png --endpoint <endpoint id> --async", False),
        (".venv/bin/fastbackend export --no-such-flag", True),
        ("fastbackend deploy", True),
        ("fastbackend batch", True),
    ],
)
def test_the_check_refuses_an_unknown_flag_or_subcommand(line, refused):
    assert (parse_error(fastbackend_argv(line)) is not None) == refused


def test_inline_code_may_name_a_command_without_its_arguments():
    assert parse_error(["batch"], whole=False) is None
    assert parse_error(["batch", "--no-such-flag"], whole=False) is not None


def test_inline_and_continued_lines_are_read():
    text = (
        "Run `fastbackend pipeline show train` first.\n\n"
        "```bash\n.venv/bin/fastbackend pipeline run train \\\n    -p lr=0.01\n```\n"
    )
    argvs = [fastbackend_argv(line) for _, line, _ in command_lines(text)]
    assert ["pipeline", "show", "train"] in argvs and ["pipeline", "run", "train", "-p", "lr=0.01"] in argvs
