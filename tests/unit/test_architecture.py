"""The layout rules of issue 12, checked from the source: no import cycles (module-level or inside
functions), a `kdedge bench` that does not load the training stack, no oversized modules, and a README
"where things live" tree that names only modules that exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kdedge"
# the bench command's own modules: what `kdedge bench` (and `--host`) imports before it measures
BENCH_MODULES = ("kdedge.cli", "kdedge.stages.bench", "kdedge.remote.bench_job", "kdedge.bench.report")
TRAINING_STACK = ("kdedge.train", "kdedge.losses", "kdedge.stages.distill")
# modules allowed past the ~300-line rule, each with the reason (the README says the same)
LONG_MODULES: dict[str, str] = {
}
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every kdedge module `name` imports, at module level or inside functions (not TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str, *, explicit: bool = True) -> None:
        # importing a.b.c runs a/__init__ and a/b/__init__ first; that implicit step, taken by a module
        # inside the package while the package is being imported, is Python's normal order, not a cycle.
        # Taking a name from one's own package (`from kdedge.losses import LOSSES` in losses/dkd.py) is.
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            own_ancestor = name.startswith(candidate + ".")
            if candidate in modules and candidate != name and (not own_ancestor or (explicit and i == len(parts))):
                found.add(candidate)

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
            resolve(source, explicit=len(submodules) < len(node.names))  # names defined in `source` itself
            for submodule in submodules:  # `from pkg import submodule`
                resolve(submodule)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_cycle_finder_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    # the checker itself, on a hand-made package: a -> b at module level, b -> a inside a function
    pkg = tmp_path / "kdedge"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from kdedge.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kdedge.sub import a\n")
    (pkg / "reg").mkdir()
    (pkg / "reg" / "__init__.py").write_text("REGISTRY = {}\nfrom kdedge.reg import fam\n")
    (pkg / "reg" / "fam.py").write_text("from kdedge.reg import REGISTRY\n")
    (pkg / "reg" / "ok.py").write_text("from kdedge.reg.fam import x\nfrom kdedge.reg import fam\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = import_graph()
    assert graph["kdedge.sub.a"] == {"kdedge.sub.b"} and graph["kdedge.sub.b"] == {"kdedge.sub.a"}
    assert graph["kdedge.sub.c"] == set()
    assert graph["kdedge.reg.fam"] == {"kdedge.reg"} and graph["kdedge.reg.ok"] == {"kdedge.reg.fam"}
    assert find_cycle(graph) == ["kdedge.reg", "kdedge.reg.fam", "kdedge.reg"]
    (pkg / "reg" / "fam.py").write_text("")
    assert find_cycle(import_graph()) == ["kdedge.sub.a", "kdedge.sub.b", "kdedge.sub.a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_bench_command_does_not_import_the_training_stack():
    code = ("import sys\n"
            f"for m in {BENCH_MODULES!r}: __import__(m)\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({TRAINING_STACK!r}))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`kdedge bench` loads the training stack: {out.stdout.split()}"


def test_no_module_over_the_size_limit():
    long = {name: n for name, p in all_modules().items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES and name not in LONG_MODULES}
    assert not long, f"modules over {MAX_LINES} lines (split them or list them with a reason): {long}"
    assert set(LONG_MODULES) <= set(all_modules()), "LONG_MODULES names a module that is gone"


def readme_tree_modules() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Where things live", 1)
    assert len(section) == 2, "README has no '## Where things live' section"
    tree = section[1].split("```", 2)[1]
    return re.findall(r"(kdedge/[\w/]*\.py|kdedge/[\w/]+/)", tree)


def test_readme_tree_names_only_modules_that_exist():
    named = readme_tree_modules()
    assert len(named) > 30, "the README tree should name the package's modules"
    missing = [n for n in named if not (ROOT / n).exists()]
    assert not missing, f"README 'Where things live' names modules that do not exist: {missing}"


def test_every_module_is_in_the_readme_tree():
    named = set(readme_tree_modules())
    unnamed = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" and str(p.relative_to(ROOT)) not in named
               and not any(str(p.relative_to(ROOT)).startswith(d) for d in named if d.endswith("/"))]
    assert not unnamed, f"modules the README tree does not mention: {unnamed}"


@pytest.mark.parametrize("module", BENCH_MODULES)
def test_bench_modules_exist(module):
    assert module in all_modules()
