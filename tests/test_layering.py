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
