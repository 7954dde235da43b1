"""The README is the front door: what it says about the command line, the API, the
settings and the output files must be what the code does. Each test reads the README and
checks one kind of promise against the code, so a renamed option, a changed default or a
removed report field fails here instead of misleading a user.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shlex
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from kgengine.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _blocks(text: str, lang: str) -> list[str]:
    """The fenced code blocks of ``lang`` in a markdown text."""
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands(words: list[str]) -> tuple[list[object], list[str]]:
    """The commands a ``kgengine ...`` line names (``a\\|b`` alternatives give several) and
    the words after the command path. words[0] is "kgengine"."""
    level, i = [typer.main.get_command(app)], 1
    while (i < len(words) and not words[i].startswith("-")
           and all(hasattr(c, "commands") for c in level)):
        names = words[i].replace("\\|", "|").split("|")
        found = [c.commands.get(n) for c in level for n in names]
        assert all(found), f"kgengine {' '.join(words[1:i + 1])}: no such command"
        level, i = found, i + 1
    return level, words[i:]


def _options(cmd: object) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def _command_lines() -> list[str]:
    """Every ``kgengine`` command line of the README's shell blocks (continuations joined,
    comments dropped) and every inline ``kgengine ...`` code span of the README and docs/
    (optional parts' brackets dropped; a release label such as "kgengine 0.9.3" is not one)."""
    lines = []
    for block in _blocks(README, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "kgengine":
                lines.append(line)
    for doc in DOCS:
        for span in re.findall(r"`(kgengine [^`]+)`", doc.read_text(encoding="utf-8")):
            line = " ".join(span.split()).replace("[", "").replace("]", "")
            if not re.match(r"kgengine \d", line):
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_docs_kgengine_commands_exist(line: str) -> None:
    """Every ``kgengine`` command the README and docs/ show names a command that exists,
    with options that command takes."""
    cmds, rest = _commands(shlex.split(line, comments=True))
    for word in rest:
        if OPTION.fullmatch(word.split("=")[0]):
            for cmd in cmds:
                assert word.split("=")[0] in _options(cmd), f"{line}: {cmd.name} has no {word}"


def _cli_rows() -> list[tuple[str, str]]:
    """The README's command-line table: (commands cell, description cell) per row."""
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 2 and cells[0].startswith("`kgengine"):
            rows.append((cells[0], cells[1]))
    return rows


def test_readme_cli_table_options_exist() -> None:
    """Each option the command-line table lists, in a row's synopsis or its description,
    exists on that row's command(s); the table covers every command."""
    rows = _cli_rows()
    assert len(rows) >= 8
    covered = set()
    for synopsis, description in rows:
        cmds = []
        for span in re.findall(r"`(kgengine [^`]*)`", synopsis):
            found, rest = _commands(span.split())
            cmds.append((found, rest))
            covered |= {c.name for c in found}
        for found, rest in cmds:
            for opt in OPTION.findall(" ".join(rest)):
                for cmd in found:
                    assert opt in _options(cmd), f"{synopsis}: {cmd.name} has no {opt}"
        anywhere = set().union(*(_options(c) for found, _ in cmds for c in found))
        for opt in OPTION.findall(" ".join(re.findall(r"`([^`]*)`", description))):
            assert opt in anywhere, f"{synopsis}: its description names {opt}"
    top = typer.main.get_command(app)
    leaves = {n for n, c in top.commands.items() if not hasattr(c, "commands")}
    groups = {n for n, c in top.commands.items() if hasattr(c, "commands")}
    subs = {s for g in groups for s in top.commands[g].commands}
    assert leaves | subs <= covered | {"collect"}, leaves | subs - covered


def test_readme_config_defaults() -> None:
    """The settings the README quotes as "`name` = value" are the config's defaults."""
    from kgengine.config import KernelGANConfig

    cfg = KernelGANConfig()
    quoted = re.findall(r"`(\w+)` = (True|False|[0-9.]+)\b", README)
    assert len(quoted) >= 10
    for name, value in quoted:
        assert getattr(cfg, name) == ast.literal_eval(value), f"README: {name} = {value}"


def _api_block() -> str:
    return next(b for b in _blocks(README, "python") if "estimate_kernel(" in b)


def test_readme_api_calls_bind() -> None:
    """Every call the README's API block makes to kgengine binds to the function's
    signature (its keywords exist, its positional count fits), and the result attributes it
    reads exist."""
    import kgengine
    from kgengine.api import EstimateResult

    tree = ast.parse(_api_block())
    names = {"kgengine": kgengine}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = __import__(node.module, fromlist=["_"])
            names |= {a.name: getattr(module, a.name) for a in node.names}
    calls = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            target = getattr(names.get(func.value.id), func.attr, None)
        else:
            target = names.get(getattr(func, "id", None))
        if target is None or not getattr(target, "__module__", "").startswith("kgengine"):
            continue
        sig = inspect.signature(target)
        sig.bind(*node.args, **{k.arg: None for k in node.keywords})
        calls += 1
    assert calls >= 6
    fields = set(dir(EstimateResult)) | set(getattr(EstimateResult, "__dataclass_fields__", {}))
    for attr in ("kernel_x2", "kernel_x4", "report", "confidence"):
        assert re.search(rf"\.{attr}\b", _api_block())
        assert attr in fields, attr


def _report_row() -> str:
    section = README.split("## Output files", 1)[1].split("\n## ", 1)[0]
    return next(line for line in section.split("\n| `") if line.startswith("<name>_report"))


def _keys_and_values(obj: object) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | set().union(*(_keys_and_values(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_keys_and_values(v) for v in obj))
    return {obj} if isinstance(obj, str) else set()


def test_readme_output_files_and_report_fields(tmp_path: Path, sample_hr) -> None:
    """A short ``kgengine estimate --x4`` writes every file the output table lists, and its
    report has every field the table's report row names (a key anywhere in the report, or a
    value such as ``off``)."""
    from kgengine.degrade import degrade
    from kgengine.imageio import write_png
    from kgengine.kernel import gaussian_kernel

    lr = degrade(sample_hr[:192, :192], gaussian_kernel(13, 1.3), 2)
    image = write_png(tmp_path / "crop.png", lr)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["estimate", str(image), "-o", str(out), "--x4",
                                      "--iters", "60"])
    assert result.exit_code == 0, result.output
    section = README.split("## Output files", 1)[1].split("\n## ", 1)[0]
    for pattern in re.findall(r"^\| `(<name>[^`]*)`", section, flags=re.M):
        stem, _, exts = pattern.replace("<name>", "crop").partition(".")
        for ext in exts.split("` / `."):
            assert (out / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"
    report = json.loads((out / "crop_report.json").read_text())
    present = _keys_and_values(report)
    named = set(re.findall(r"`([a-z][a-z0-9_]*)`", _report_row()))
    # only in other runs: with --restarts; an image under 32 px; a captured CUDA graph
    elsewhere = {"agreement", "kernels", "medoid", "inliers", "skipped", "captured"}
    missing = named - present - elsewhere
    assert not missing, f"README's report row names fields the report lacks: {missing}"


def test_docs_links_resolve() -> None:
    """Every relative link and image in the README and docs/ points at a file that exists."""
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_readme_test_command_is_ci_command() -> None:
    """``.ci/run`` runs exactly the test command the README gives."""
    command = README.split("Run the tests", 1)[1]
    command = _blocks(command, "bash")[0].strip()
    assert command in (ROOT / ".ci" / "run").read_text()


def _bench_commands() -> list[tuple[str, str]]:
    """(document, command) for every ``python bench/<script>.py ...`` code span in the README
    and docs/, line breaks inside a span joined."""
    found = []
    for doc in DOCS:
        for span in re.findall(r"`(python bench/[^`]+)`", doc.read_text(encoding="utf-8")):
            found.append((doc.name, " ".join(span.split())))
    return found


def test_docs_bench_commands_exist() -> None:
    """Every bench command the documents cite names a script in bench/ and only options
    that script's parser declares, so each figure's command can be run again as written."""
    commands = _bench_commands()
    assert len(commands) >= 30
    for doc, command in commands:
        words = shlex.split(command)
        script = ROOT / words[1]
        assert script.is_file(), f"{doc}: {command}: no {words[1]}"
        declared = set(re.findall(r"""add_argument\(\s*["'](--?[\w-]+)""", script.read_text()))
        for word in words[2:]:
            opt = word.split("=")[0]
            if OPTION.fullmatch(opt):
                assert opt in declared | {"-h", "--help"}, f"{doc}: {command}: no {opt}"
