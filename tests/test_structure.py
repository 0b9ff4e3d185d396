"""The package's shape: stages imported in data-flow order, private modules kept private, no
import cycles, no oversized modules, an agent that stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import autotune

PKG = Path(autotune.__file__).parent
MAX_LINES = 500  # a module holds one concept; past this it is two

# The data flow, first to last. A module may import its own stage and the stages before it,
# never a later one (docs/architecture.md draws the same list).
STAGES: list[tuple[str, ...]] = [
    (
        "autotune",
        "autotune.errors",
        "autotune.records",
        "autotune.wire",
        "autotune.budget",
        "autotune.inputs",
        "autotune._util",
        "autotune._yaml",
        "autotune._tempdir",
        "autotune._interrupt",
    ),
    ("autotune.task",),
    ("autotune.devices",),
    ("autotune.knobs",),
    ("autotune.space",),
    ("autotune.build",),
    ("autotune.measure",),
    ("autotune.agent",),
    ("autotune.study",),
    ("autotune.report",),
    ("autotune.result",),
    ("autotune.tune",),
    ("autotune.commands",),
    ("autotune.api", "autotune.cli", "autotune.__main__"),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py") if "_vendor" not in p.parts}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every autotune module ``path`` imports, at any depth (inside functions too)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    # `if TYPE_CHECKING:` imports never run; every other import does, at any depth
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        for t in targets:
            # `import a.b.c` runs a, a.b and a.b.c: the deepest known module is the edge
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # a package's __init__ is a parent of every module in it: importing a submodule runs it, but
    # that is not an edge from the submodule's code, so only real import statements count
    return {name: _imports(path, name, known) for name, path in mods.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import autotune.space\n"
        "def f():\n    from autotune.result import ParetoSet\n    import autotune.errors\n"
    )
    known = {"autotune.result", "autotune.errors", "autotune.space", "autotune"}
    assert _imports(src, "autotune.x", known) == {
        "autotune.result",
        "autotune.errors",
    }


def test_no_import_cycle_in_the_package() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_is_oversized() -> None:
    big = {
        name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines (split them along their seams): {big}"


def test_the_agent_side_loads_neither_torch_nor_gpu_runtimes() -> None:
    """An edge device runs the agent without torch; its job subprocess loads only what it measures."""
    code = (
        "import sys\n"
        "import autotune.records, autotune.wire, autotune.devices, autotune.agent\n"
        "import autotune.agent.server, autotune.agent.job\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m == 'tensorrt'"
        " or m.startswith('onnxruntime') or m == 'optuna']\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the agent side imported: {out.stdout.strip()}"


def _stage(module: str) -> int:
    """The stage of ``module``: the stage of its longest listed prefix."""
    best, found = -1, -1
    for i, names in enumerate(STAGES):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best:
                best, found = len(n), i
    assert found >= 0, f"{module} is in no stage: add it to STAGES and docs/architecture.md"
    return found


def _violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in graph.items():
        for t in targets:
            if _stage(t) > _stage(mod):
                bad.append(f"{mod} imports the later stage {t}")
            # a private module (`pkg._x`) belongs to its package: only modules inside pkg import it
            parts = t.split(".")
            for i, part in enumerate(parts[1:], start=1):
                owner = ".".join(parts[:i])
                if part.startswith("_") and not (mod == owner or mod.startswith(owner + ".")):
                    bad.append(f"{mod} imports {t}, private to {owner}")
                    break
    return sorted(bad)


def test_stages_import_only_earlier_stages_and_no_other_package_private_module() -> None:
    bad = _violations(_graph())
    assert not bad, "\n".join(bad)


def test_the_stage_rule_catches_a_backward_and_a_private_import() -> None:
    graph = {
        "autotune.space._space": {"autotune.tune._loop"},
        "autotune.result._pareto": {"autotune.study._trials", "autotune.study"},
        "autotune.study._guide": {"autotune.study._trials"},
    }
    assert _violations(graph) == [
        "autotune.result._pareto imports autotune.study._trials, private to autotune.study",
        "autotune.space._space imports autotune.tune._loop, private to autotune.tune",
        "autotune.space._space imports the later stage autotune.tune._loop",
    ]
