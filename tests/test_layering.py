"""Export depends on the model and the data, never on training (issue 12, item 7: no training <-> deploy cycle)."""

from __future__ import annotations

import subprocess
import sys


def test_export_imports_no_training_module():
    code = ("import sys, inspect, mpoxscan.deploy.export as e, mpoxscan.models.checkpoint, mpoxscan.data.splits\n"
            "src = inspect.getsource(e)\n"
            "print([m for m in sys.modules if m.startswith('mpoxscan.training')], 'mpoxscan.training' in src)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] False"  # neither at import time nor in any lazy import inside its functions
