"""The package's import graph has no cycle, counting imports inside functions too.

A module that imports another inside a function still depends on it: a circle held together
by function-level imports is a circle all the same (it decides the order modules must load
in, and no module of it can be understood or tested alone). Data flows one way: the run
config (``vgbench.spec``) is a leaf, the registries sit above it, ``vgbench.configs`` above
them.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "vgbench"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> its file, for every module of ``package`` (packages by __init__)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def imported_names(module: str, node: ast.Import | ast.ImportFrom, modules: dict) -> list[str]:
    """The dotted names an import statement of ``module`` reaches (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        if modules[module].name != "__init__.py":
            parts = parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    # `from pkg import sub` imports the submodule; `from mod import name` the module
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names]


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported_names(name, node, modules):
                while target and target not in modules:   # vgbench.x.Name -> vgbench.x
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import circle through the first module of ``component``: a -> b -> ... -> a."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:   # breadth first: the shortest way back to start
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "vgbench.spec" in graph and len(graph) > 20
    components = strongly_connected(graph)
    report = "\n".join(f"{len(c)} modules: {', '.join(c)}\n  e.g. {' -> '.join(a_cycle(graph, c))}"
                       for c in components)
    assert not components, f"import cycles (module- and function-level imports):\n{report}"


def test_the_run_config_is_a_leaf():
    graph = import_graph()
    assert graph["vgbench.spec"] <= {"vgbench.names"}
    assert graph["vgbench.names"] == set()


def test_the_checker_sees_a_cycle_made_by_a_function_level_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import thing\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert strongly_connected(graph) == [["pkg.a", "pkg.b"]]
    assert a_cycle(graph, ["pkg.a", "pkg.b"]) == ["pkg.a", "pkg.b", "pkg.a"]


def test_the_config_layer_imports_without_jax():
    # the reporter reads configs (field defaults, run ids) without JAX; building a RunSpec
    # resolves it against the registries, whose entries are JAX functions
    import subprocess

    code = ("import sys; from vgbench.spec import RunSpec, run_id_of; import vgbench.configs; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_the_benchmark_scripts_have_no_import_cycle():
    # the scripts import each other by file name (benchmarks/ is on their path): what they
    # share lives in perf_common, which imports none of them
    scripts = {p.stem: p for p in sorted((ROOT / "benchmarks").glob("*.py"))}
    graph = {name: set() for name in scripts}
    for name, path in scripts.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in scripts}
            elif isinstance(node, ast.ImportFrom) and node.module in scripts and not node.level:
                graph[name].add(node.module)
    assert "perf_common" in graph and graph["perf_common"] == set()
    assert graph["perf_cnn"] >= {"perf_common"}
    assert not strongly_connected(graph), strongly_connected(graph)
