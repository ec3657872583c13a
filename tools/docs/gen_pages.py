"""Run by mkdocs-gen-files at every build (mkdocs.yml): the model card and the datasheet, rendered from the files
that ship, so that the pages cannot drift from them."""

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cards import CARD, CURATE_REPORT, datasheet, load, model_card  # noqa: E402

card = load(CARD)
with mkdocs_gen_files.open("model-card.md", "w") as fh:
    fh.write(model_card(card))
mkdocs_gen_files.set_edit_path("model-card.md", None)
with mkdocs_gen_files.open("data/datasheet.md", "w") as fh:
    fh.write(datasheet(load(CURATE_REPORT), card))

# The measurements' plots (committed under benchmarks/results/) beside the pages that show them, as results/...
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
for png in sorted(RESULTS.rglob("*.png")):
    with mkdocs_gen_files.open(f"results/{png.relative_to(RESULTS).as_posix()}", "wb") as fh:
        fh.write(png.read_bytes())
