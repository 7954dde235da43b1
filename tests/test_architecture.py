"""The package's shape: layers, no import cycles, small modules and functions.

Every import of a ``kgengine`` module is read from the source (also those inside functions),
so a new cycle or an import from a lower layer to a higher one fails here, with the edge
named. ``docs/ARCHITECTURE.md`` draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kgengine"

#: Layer of each module (by dotted-name prefix, longest match wins); lower layers never
#: import higher ones. ``kgengine._version`` may be imported from anywhere.
LAYERS: dict[str, int] = {
    # 0 foundation: no kgengine imports but each other
    "kgengine._version": 0,
    "kgengine.errors": 0,
    "kgengine.env_settings": 0,
    "kgengine.atomic": 0,
    "kgengine.hooks": 0,
    "kgengine.sysinfo": 0,
    "kgengine.host_memory": 0,
    # 1 kernel maths, image IO, configuration, custom ops
    "kgengine.kernel": 1,
    "kgengine.lanes": 1,
    "kgengine.devices": 1,
    "kgengine.numba_util": 1,
    "kgengine.host_threads": 1,
    "kgengine.stopping": 1,
    "kgengine.imageio": 1,
    "kgengine.config": 1,
    "kgengine.ops": 1,
    # 2 the model: networks, priors, sampling maps, optimiser, metrics, the degradation façade
    "kgengine.generator": 2,
    "kgengine.discriminator": 2,
    "kgengine.discriminator_numba": 2,
    "kgengine.discriminator_kernels": 2,
    "kgengine.generator_numba": 2,
    "kgengine.priors_numba": 2,
    "kgengine.compiled": 2,
    "kgengine.priors": 2,
    "kgengine.probmap": 2,
    "kgengine.adam": 2,
    "kgengine.flatbuf": 2,
    "kgengine.metrics": 2,
    "kgengine.consensus": 2,
    "kgengine.width": 2,
    "kgengine.spectral": 2,
    "kgengine.release": 2,
    "kgengine.confidence": 2,
    "kgengine.degrade": 2,
    # 3 training
    "kgengine.trainer": 3,
    "kgengine.lean_step": 3,
    "kgengine.graph_step": 3,
    "kgengine.batch_rows": 3,
    "kgengine.split_trainer": 3,
    "kgengine.prepare": 3,
    # 4 estimation API, outputs, pools, plots, exports, runtime providers
    "kgengine.api": 4,
    "kgengine.outputs": 4,
    "kgengine.pool": 4,
    "kgengine.kernel_files": 4,
    "kgengine.pool_import": 4,
    "kgengine.pool_interop": 4,
    "kgengine.plotting": 4,
    "kgengine.export": 4,
    "kgengine.providers": 4,
    # 5 jobs
    "kgengine.accuracy": 5,
    "kgengine.farm": 5,
    "kgengine.degradation": 5,
    # 6 front ends
    "kgengine.progress": 6,
    "kgengine.commands": 6,
    "kgengine.cli": 6,
    "kgengine.__main__": 6,
    "kgengine": 6,  # the package root re-exports the public API
}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(name: str) -> int:
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len,
               default=None)
    if best is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS and docs/ARCHITECTURE.md")
    return LAYERS[best]


def _resolve(importer: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_pkg else importer.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> set[str]:
    """The kgengine modules that ``name`` imports, anywhere in its source."""
    path = MODULES[name]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "kgengine"}
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(name, path.name == "__init__.py", node)
            if mod.split(".")[0] != "kgengine":
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in MODULES else mod)
    out.discard(name)
    return out


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, deps in GRAPH.items()
        for b in deps
        if b != "kgengine._version" and layer(b) > layer(a)
    ]
    assert not bad, "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    # a package's __init__ importing its submodules is fine; a submodule taking a name from
    # its package's __init__ (``from kgengine.ops import x``, x not a module) closes a cycle
    importers_of_root = [a for a, deps in GRAPH.items() if "kgengine" in deps]
    assert not importers_of_root, f"import kgengine._version, not kgengine: {importers_of_root}"
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def _code_lines(lines: list[str]) -> int:
    return sum(1 for s in lines if s.strip() and not s.strip().startswith("#"))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_and_function_sizes(name):
    path = MODULES[name]
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path}: {len(lines)} lines"
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = lines[node.lineno - 1: node.end_lineno]
        first = node.body[0]
        doc = 0
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str):
            doc = _code_lines(lines[first.lineno - 1: first.end_lineno])
        n = _code_lines(body) - doc
        assert n <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {n} lines of code"
