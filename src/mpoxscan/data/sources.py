"""Image sources: folders of class sub-folders, with a name, a patient-id rule, a label mapping and a priority."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mpoxscan.errors import MpoxscanError
from mpoxscan.images import IMAGE_SUFFIXES


class SourceError(MpoxscanError):
    """A source folder or one of its options cannot be used."""


@dataclass(frozen=True)
class Source:
    """One folder of ``<class>/<image>`` files.

    ``group_regex``: applied to the file name; its first capture group (or whole match) is the patient id, so that
    images of one patient stay together. Without it (or for a file it does not match) every image is its own group,
    named by its path relative to the root: two different photos that share a file name in two class folders
    (``Chickenpox/16.jpg``, ``Healthy/16.jpg``) are not one patient.
    ``label_map``: folder name -> labels. One label renames the class; several (``Others=Chickenpox|Measles``) mark the
    folder as a coarse class whose images are one of those finer classes.
    ``priority``: which source's label and copy win when the same picture is in two sources (higher wins).
    ``site``: where the photos come from, for the leave-one-site-out protocol (MSLD v1 and v2 are one site); the
    name by default.
    ``folds_from``: this source's own predefined splits (MSLD v2.0's ``folds.csv``), matched by file name.
    ``strict``: every class folder must be named in ``label_map`` (a pool with a fixed taxonomy: a folder nobody
    mapped stops curation instead of becoming a class of its own); ``FOLDER=-`` skips a folder on purpose.
    ``apart``: this source's photos are checked for copies of all the others, but take no place in the others'
    lists of nearest pictures (data/duplicates.py), so that adding it cannot change how the other sources' photos
    are matched to one another: expert cases added to a pool that was measured without them.
    """

    name: str
    root: Path
    group_regex: str | None = None
    label_map: dict[str, tuple[str, ...]] = field(default_factory=dict)
    priority: int = 0
    site: str = ""
    folds_from: Path | None = None
    strict: bool = False
    apart: bool = False

    @property
    def site_name(self) -> str:
        return self.site or self.name


#: A label map value that leaves a class folder out on purpose (recorded in the report).
SKIP = ("-",)
#: The group regex of a folder written by `mpoxscan cases export` (web/training_export.py writes
#: <label>/case-<export id>_<n>.jpg): all photos of one case are one group. A test checks the two agree.
EXPERT_GROUP = r"^case-([0-9a-f]{20})_"


@dataclass(frozen=True)
class Record:
    """One image file found in a source, before any curation decision."""

    path: Path
    source: str
    relpath: str  # relative to the source's root
    folder: str  # the class sub-folder it was found in
    label: str  # after the label map (a coarse label keeps the folder's name)
    fine_labels: tuple[str, ...]  # the finer classes a coarse label stands for; (label,) when already fine
    group: str  # "<source>:<patient id>", or "<source>:<relative path>" for a file without a patient id
    group_matched: bool  # whether the group regex matched this file


def parse_source_arg(text: str, index: int) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (the folder's name becomes the source name)."""
    name, sep, path = text.partition("=")
    if not sep or "/" in name or not name:
        path, name = text, ""
    root = Path(path).expanduser()
    return (name or root.resolve().name or f"source{index}"), root


def parse_keyed(values: tuple[str, ...], option: str, names: set[str]) -> dict[str, str]:
    """Options of the form ``NAME=VALUE`` for a known source NAME."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not rest:
            raise SourceError(f"{option} expects NAME=VALUE, got '{value}'")
        if name not in names:
            raise SourceError(f"{option} names unknown source '{name}' (sources: {', '.join(sorted(names))})")
        out[name] = rest
    return out


def parse_label_maps(values: tuple[str, ...], names: set[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """``--label-map NAME:FOLDER=LABEL[|LABEL...]`` -> {source: {folder: labels}}."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for value in values:
        head, sep, labels = value.partition("=")
        name, colon, folder = head.partition(":")
        parts = tuple(x.strip() for x in labels.split("|") if x.strip())
        if not sep or not colon or not folder or not parts:
            raise SourceError(f"--label-map expects NAME:FOLDER=LABEL[|LABEL...], got '{value}'")
        if name not in names:
            raise SourceError(f"--label-map names unknown source '{name}' (sources: {', '.join(sorted(names))})")
        out.setdefault(name, {})[folder] = parts
    return out


def scan(source: Source) -> list[Record]:
    """Every image file under ``source.root/<class>/``, sorted; errors if the layout is not usable."""
    root = source.root
    if not root.exists():
        raise SourceError(f"source '{source.name}': folder {root} does not exist")
    if not root.is_dir():
        raise SourceError(f"source '{source.name}': {root} is not a folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    if not class_dirs:
        raise SourceError(f"source '{source.name}': {root} has no class sub-folders (expected {root}/<class>/<image>)")
    try:
        pattern = re.compile(source.group_regex) if source.group_regex else None
    except re.error as exc:
        raise SourceError(f"source '{source.name}': bad group regex '{source.group_regex}': {exc}") from None
    unknown = set(source.label_map) - {d.name for d in class_dirs}
    if unknown:
        raise SourceError(f"source '{source.name}': --label-map names folders it does not have: {', '.join(sorted(unknown))}")
    if source.strict and (unmapped := [d.name for d in class_dirs if d.name not in source.label_map]):
        raise SourceError(f"source '{source.name}': class folder '{unmapped[0]}' is not in its label map "
                          f"(map it to a class, or skip it with {unmapped[0]}=-)")
    records = []
    for class_dir in class_dirs:
        mapped = source.label_map.get(class_dir.name, (class_dir.name,))
        if mapped == SKIP:
            continue
        label = mapped[0] if len(mapped) == 1 else class_dir.name
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            match = pattern.search(path.name) if pattern else None
            relpath = path.relative_to(root)
            # No patient id: the file alone (its relative path; a file name has no "/", so no id can collide).
            patient = (match.group(1) if match.groups() else match.group(0)) if match else relpath.as_posix()
            records.append(Record(path=path, source=source.name, relpath=str(relpath),
                                  folder=class_dir.name, label=label, fine_labels=mapped, group=f"{source.name}:{patient}",
                                  group_matched=bool(match)))
    if not records:
        raise SourceError(f"source '{source.name}': no image files under {root}/<class>/")
    if pattern and not any(r.group_matched for r in records):
        raise SourceError(f"source '{source.name}': group regex '{source.group_regex}' matches none of its "
                          f"{len(records)} file names (for example '{records[0].path.name}')")
    return records


def check_taxonomy(sources: list[Source], classes: tuple[str, ...]) -> None:
    """Every label a source's map produces must be a class of the taxonomy (one line naming the first that is not)."""
    for source in sources:
        for folder, labels in source.label_map.items():
            if labels == SKIP:
                continue
            if bad := [x for x in labels if x not in classes]:
                raise SourceError(f"source '{source.name}': folder '{folder}' maps to '{bad[0]}', which is not one of "
                                  f"the classes ({', '.join(classes)})")


def load_pool(path: Path, data: Path) -> tuple[list[Source], tuple[str, ...]]:
    """Sources and taxonomy from a pool file (TOML: ``classes`` and one ``[[source]]`` table per folder, with its
    ``path`` relative to ``data``, ``group``, ``priority``, ``site``, ``folds`` and ``labels`` = {folder: class or
    [classes] or "-"}). Every folder of every source must be mapped, and to a class of the taxonomy."""
    import tomllib

    try:
        spec = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: no such pool file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a valid pool file ({exc})") from None
    classes = tuple(spec.get("classes") or ())
    if not classes or not spec.get("source"):
        raise SourceError(f"{path}: a pool file needs 'classes' and at least one [[source]]")
    sources = []
    for entry in spec["source"]:
        if not entry.get("name") or not entry.get("path") or not isinstance(entry.get("labels"), dict):
            raise SourceError(f"{path}: every [[source]] needs name, path and a labels table")
        labels = {folder: SKIP if v == "-" else (tuple(v) if isinstance(v, list) else (v,))
                  for folder, v in entry["labels"].items()}
        folds = entry.get("folds")
        sources.append(Source(name=entry["name"], root=Path(data) / entry["path"], group_regex=entry.get("group"),
                              label_map=labels, priority=int(entry.get("priority", 0)), site=entry.get("site", ""),
                              folds_from=Path(data) / folds if folds else None, strict=True))
    check_taxonomy(sources, classes)
    return sources, classes


#: The pool files that ship with mpoxscan, by name (``mpoxscan curate --pool public``).
POOLS_DIR = Path(__file__).resolve().parent / "pools"


def pool_path(name_or_path: str) -> Path:
    """A shipped pool by name, or a pool file's path."""
    shipped = POOLS_DIR / f"{name_or_path}.toml"
    return shipped if shipped.exists() else Path(name_or_path)
