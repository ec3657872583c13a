"""The documentation (issue 29): the site builds with --strict, the generated pages render what the files hold, the
README stays short and in a newcomer's order, and the commands the README and the site tell a reader to paste exist
with the options they use."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "docs"))
import cards  # noqa: E402

QUIET = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}


def test_the_site_builds_in_strict_mode(tmp_path):
    """A broken link or anchor, a page left out of the navigation, a missing include: each fails the build."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, env=QUIET, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    card = (site / "model-card" / "index.html").read_text()
    assert json.loads(cards.CARD.read_text())["sha256"] in card
    # The command-line reference is generated from the click commands: every sub-command and a help text.
    cli = (site / "cli" / "index.html").read_text()
    from mpoxscan.cli import cli as group

    for name in group.commands:
        assert f"mpoxscan {name}" in cli, name
    assert "--keep-days" in cli and "--tone-balance" in cli
    # ARCHITECTURE.md is included, not copied.
    assert "Where things live" in (site / "architecture" / "index.html").read_text()
    assert (REPO / "docs" / "architecture.md").read_text().strip() == '--8<-- "ARCHITECTURE.md"'


def test_omitted_pages_and_broken_anchors_fail_the_build(tmp_path):
    """The validation settings really are strict: a page outside the navigation and a link to a missing anchor
    each abort the build."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    for name in ("mkdocs.yml", "ARCHITECTURE.md"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "tools", copy / "tools")
    (copy / "src" / "mpoxscan" / "bundled").mkdir(parents=True)
    shutil.copy(cards.CARD, copy / "src" / "mpoxscan" / "bundled" / "card.json")
    shutil.copytree(REPO / "benchmarks" / "results", copy / "benchmarks" / "results")  # pages include its reports
    (copy / "docs" / "orphan.md").write_text("# Not in the nav\n")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=copy, env=QUIET,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "orphan.md" in out.stdout + out.stderr
    (copy / "docs" / "orphan.md").unlink()
    (copy / "docs" / "development.md").write_text("# Development\n\n[x](index.md#no-such-anchor)\n")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=copy, env=QUIET,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no-such-anchor" in out.stdout + out.stderr


def test_the_model_card_renders_whatever_the_card_holds():
    """More protocols, more classes, per-class shares, other prevalences, keys never seen before: all rendered, under
    their own names (the data-pool rebuild adds them); a figure from the shipped card appears as the card has it."""
    card = json.loads(cards.CARD.read_text())
    page = cards.model_card(card)
    for section in ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data", "Training data",
                    "Quantitative analyses", "Ethical considerations", "Caveats and recommendations"):
        assert f"## {section}" in page, section
    for protocol in card["cross_validated_metrics"]["protocols"]:
        assert f"### {protocol}" in page
    for c in card["classes"]:
        assert c in page
    for entry in card["cross_validated_metrics"]["protocols"].values():
        acc = entry["accuracy_over_folds"]
        assert f"{acc['mean'] * 100:.1f} ± {acc['sd'] * 100:.1f} %" in page
    spec = card["cross_validated_metrics"]["protocols"]["kfold"]["at_shipped_threshold"]["metrics"]["specificity"]
    assert f"specificity (not mpox) | {100 * spec['value']:.1f} [{100 * spec['ci95'][0]:.1f}" in page
    # Issue 29, audit finding 6: the warning is said while a card's figures are at each fold's own threshold only.
    assert '!!! warning "Which threshold"' not in page
    old = {k: v for k, v in card.items() if k != "operating_point"}
    old["cross_validated_metrics"] = {"protocol": "10-fold", "metrics": {"accuracy": {"mean": 0.8, "sd": 0.04}}}
    assert '!!! warning "Which threshold"' in cards.model_card(old)

    grown = json.loads(json.dumps(card))
    grown["classes"] += ["Herpes zoster"]
    protocols = grown["cross_validated_metrics"]["protocols"]
    protocols["leave-one-source-out"] = {
        "folds": 4, "source": "benchmarks/results/cv/pool-loso/results.json",
        "metrics": {"accuracy": {"mean": 0.61, "sd": 0.09}},
        "pooled_out_of_fold": {"main": {"n_images": 2500, "metrics": {
            "ppv_at_0.3": {"value": 0.52, "ci95": [0.47, 0.58], "n_boot": 2000}}}},
        "per_class": {"Herpes zoster": {"n": 120, "share_flagged_positive": 0.083},
                      "Chickenpox": {"n": 80, "share_flagged_positive": 0.41}},
        "by_source": {"msld2": {"accuracy": 0.7}, "dermnet": {"accuracy": 0.55}},
        "operating_point": {"threshold": 0.2, "sensitivity": 0.9},
    }
    page = cards.model_card(grown)
    assert "### leave-one-source-out" in page and "Herpes zoster" in page
    assert "PPV at 30 % prevalence | 52.0 [47.0, 58.0] %" in page
    assert "share flagged positive" in page and "8.3 %" in page and "41.0 %" in page
    assert "dermnet" in page and "by source" in page
    assert '!!! warning "Which threshold"' not in page  # an operating point is now recorded


def test_the_datasheet_renders_the_curate_report():
    report = json.loads(cards.CURATE_REPORT.read_text())
    card = json.loads(cards.CARD.read_text())
    page = cards.datasheet(report, card)
    for section in ("Motivation", "Composition", "Collection process", "Preprocessing, cleaning, labelling", "Uses",
                    "Distribution", "Maintenance"):
        assert f"## {section}" in page, section
    assert f"{report['counts']['files']:,} files read" in page
    for cls, n in report["counts"]["kept_by_label"].items():
        assert f"{cls} {n:,} (" in page
    assert f"Patients (groups after joining those that share a picture): {report['groups']['final']}" in page
    # the report of the set the bundled model learned from
    assert sum(report["counts"]["kept_by_label"].values()) == card["data"]["images"]
    report["sources"].append({"name": "dermnet", "group_regex": None, "priority": 0, "files_without_group_match": 7})
    report["counts"]["before"]["dermnet"] = {"Herpes zoster": 9}
    assert "dermnet: Herpes zoster | 9 | 0 |" in cards.datasheet(report, card)


README = (REPO / "README.md").read_text()


def test_readme_is_short_and_in_a_newcomers_order():
    assert len(README.encode()) <= 12 * 1024
    heads = [line for line in README.splitlines() if line.startswith("## ")]
    where = {h: README.index(h) for h in heads}
    app = next(h for h in heads if "app" in h.lower())
    assert where[app] < len(README) / 3, "the app's section within the first third"
    two = README.index("make run")
    assert two < where[app] and "make test" in README[two:where[app]]
    assert re.search(r"!\[[^\]]+\]\(docs/screenshots/[^)]+\.png\)", README)
    for shot in re.findall(r"\]\((docs/screenshots/[^)]+)\)", README):
        assert (REPO / shot).exists(), shot
    table = README[README.index("| figure |"):]
    rows = [r for r in table.splitlines() if r.startswith("|")][2:]
    assert len(rows) == 5 and all(r.count("`") >= 2 for r in rows), "five figures, each with its command"
    # the headline table within the first screenful after the two commands (about 60 lines)
    assert README[two:README.index("| figure |")].count("\n") <= 60
    for link in re.findall(r"\]\((docs/[^)#]+\.md)", README):
        assert (REPO / link).exists(), link


def _examples() -> list[tuple[str, str]]:
    """(file, command line) of every `mpoxscan ...` line in the README's and the site's shell blocks."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            for line in block.splitlines():
                line = line.split(" # ")[0].split(" ; ")[0].split(" && ")[-1].strip()
                if re.match(r"(\.venv(-tflite)?/bin/mpoxscan|\$M) ", line):
                    found.append((path.name, line))
    return found


def test_every_pasted_mpoxscan_command_exists_with_its_options():
    """Each `mpoxscan SUB [SUB2] --option` in a shell block of the README or the site names a real command and real
    options of it (click's own parser is the judge, so a renamed option fails here, not in a reader's terminal)."""
    import click

    from mpoxscan.cli import cli as group

    examples = _examples()
    assert len(examples) > 40
    for where, line in examples:
        words = shlex.split(line.replace("$M", "mpoxscan").split(" | ")[0].replace("<", "").replace(">", ""))[1:]
        command, ctx_path = group, []
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            assert words[0] in command.commands, f"{where}: {line}: no command {words[0]}"
            command = command.commands[words[0]]
            ctx_path.append(words.pop(0))
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        used = {w.split("=")[0] for w in words if w.startswith("--")}
        assert used <= known, f"{where}: {line}: unknown option(s) {sorted(used - known)}"


def test_no_page_copies_help_text_by_hand():
    """The command-line reference is generated (mkdocs-click): no page holds a pasted `Usage: mpoxscan` block."""
    assert "::: mkdocs-click" in (REPO / "docs" / "cli.md").read_text()
    for path in [REPO / "README.md", *(REPO / "docs").rglob("*.md")]:
        assert "Usage: mpoxscan" not in path.read_text(), path


def test_make_run_takes_a_port_and_says_so():
    out = subprocess.run(["make", "-n", "run", "PORT=8123"], cwd=REPO, capture_output=True, text=True).stdout
    assert "mpoxscan serve --port 8123" in out
    assert "make run PORT=" in out  # the line it prints tells how to change it
    assert "PORT=" in README


@pytest.mark.parametrize("output", ["curated/msld/manifest.csv", "models/lite0/model.pt", "maps/x.png", "review/index.html",
                                    "validation/x.json", "results.csv",
                                    "site/index.html", "runs/x/results.json"])
def test_what_the_examples_write_is_ignored(output):
    done = subprocess.run(["git", "check-ignore", "-q", output], cwd=REPO)
    assert done.returncode == 0, f"{output} is not git-ignored"


@pytest.mark.integration
def test_the_readme_quick_check_runs_as_written(shared_data):
    """The first line of the README's tour, run as a reader would paste it (on the real photo it names)."""
    line = next(line for _, line in _examples() if line.startswith("$M predict ../shared/data/"))
    photo = shared_data / line.split("../shared/data/")[1].split()[0]
    done = subprocess.run([str(Path(sys.executable).parent / "mpoxscan"), "predict", str(photo)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "POSITIVE" in done.stdout.upper() or "NEGATIVE" in done.stdout.upper() or "CANNOT TELL" in done.stdout.upper()
