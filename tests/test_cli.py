"""The `mpoxscan` command as a person runs it: a real process, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpoxscan.models import list_models


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpoxscan.cli", *args], capture_output=True, text=True, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], proc.stderr


def test_models_json_lists_every_backbone_verified():
    proc = run("models", "--json", "--check")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        assert r["weights"]["status"] == "verified"
        assert Path(r["weights"]["file"]).is_file()
        assert r["input_size"] in (224, 240, 260) and len(r["mean"]) == 3


def test_models_table_names_each_model():
    proc = run("models")
    assert proc.returncode == 0, proc.stderr
    for name in list_models():
        assert name in proc.stdout
    assert "verified" in proc.stdout


def test_imagenet_demo_on_sample_photos():
    proc = run("imagenet", "--models", "mobilenetv2_100", "--top", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)["mobilenetv2_100"]
    coffee = next(p for p in preds if p["image"].endswith("coffee.png"))
    assert coffee["top"][0]["class"] == "espresso" and len(coffee["top"]) == 2


def test_imagenet_bad_inputs_fail_cleanly(tmp_path: Path):
    assert_clean_failure(run("imagenet", str(tmp_path / "missing.jpg")), "no such file")
    junk = tmp_path / "junk.jpg"
    junk.write_text("not a photo")
    assert_clean_failure(run("imagenet", str(junk), "--models", "efficientnet_lite0"), "not an image")
    assert_clean_failure(run("imagenet", "--models", "resnet50"), "unknown model 'resnet50'")


@pytest.mark.parametrize("command", ["models", "imagenet", "curate", "cv", "report", "train"])
def test_every_command_has_help_with_an_example(command):
    proc = run(command, "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout and f"mpoxscan {command}" in proc.stdout
