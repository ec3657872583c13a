"""Export depends on the model and the data, never on training (issue 12, item 7: no training <-> deploy cycle)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_export_imports_no_training_module():
    code = ("import sys, inspect, mpoxscan.deploy.export as e, mpoxscan.models.checkpoint, mpoxscan.data.splits\n"
            "src = inspect.getsource(e)\n"
            "print([m for m in sys.modules if m.startswith('mpoxscan.training')], 'mpoxscan.training' in src)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] False"  # neither at import time nor in any lazy import inside its functions


def test_routers_and_dependencies_import_nothing_from_the_app():
    """Issue 14 (FastAPI's habits): settings and paths live in web/settings.py, dependencies in web/deps.py, so the
    routers never import web/app.py (which imports them); the production settings hold no test counters."""
    import ast
    import dataclasses

    import mpoxscan.web
    from mpoxscan.web.settings import Settings

    web = Path(mpoxscan.web.__file__).parent
    for path in [*sorted((web / "routers").glob("*.py")), web / "deps.py", web / "settings.py"]:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        assert "mpoxscan.web.app" not in imported, path.name
    assert "counters" not in {f.name for f in dataclasses.fields(Settings)}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, every import statement counted, those inside functions too (a lazy
    import is still an arrow: it only moves the circle from import time to call time)."""
    import ast

    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against the importing module's package
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                imported |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def import_circle(package_dir: Path) -> list[str] | None:
    """One circle of imports among the package's modules (the first module repeated at its end), or None."""
    from graphlib import CycleError, TopologicalSorter

    try:
        TopologicalSorter(import_graph(package_dir)).prepare()
    except CycleError as exc:
        return exc.args[1]
    return None


def test_no_import_circle_in_src():
    """Issue 29: the imports of src/ run one way (training's strategies import FoldOutput from training/outputs.py,
    not from cv.py, which imports them; softmax lives in mpoxscan/numeric.py, below training, deploy and explain)."""
    import mpoxscan

    circle = import_circle(Path(mpoxscan.__file__).parent)
    assert circle is None, " -> ".join(circle)


def test_the_circle_finder_finds_a_lazy_circle(tmp_path):
    """The check can fail: two modules that import each other inside functions form a circle."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "runner.py").write_text("def run():\n    from pkg.strategy import fit\n    return fit()\n")
    (pkg / "strategy.py").write_text("def fit():\n    from .runner import run\n    return run\n")
    (pkg / "leaf.py").write_text("import pkg.strategy\n")
    assert set(import_circle(pkg)) == {"pkg.runner", "pkg.strategy"}
    (pkg / "strategy.py").write_text("def fit():\n    return 1\n")
    assert import_circle(pkg) is None


def test_the_onnx_runtime_side_imports_nothing_from_training():
    """deploy/runtime.py screens without PyTorch: nothing it imports, directly or through others, is in training/."""
    import mpoxscan

    graph = import_graph(Path(mpoxscan.__file__).parent)
    seen, todo = set(), ["mpoxscan.deploy.runtime"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    assert not [m for m in seen if m.startswith("mpoxscan.training")]
