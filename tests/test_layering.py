"""Data flows one way (../shared/DESIGN.md, "Layout"): nothing imports from a room above it.

The rooms, bottom to top:
    errors -> data -> meta -> store -> label -> generate | evaluate -> loop -> project -> export | serve | report
    -> library -> cli

Every ``import`` and ``from ... import`` under ``src/metalabel`` counts, at module level or inside a
function (a lazy import still couples the rooms; a circle means a job sits in the wrong room).
Rooms on the same level (generate and evaluate; export, serve and report) may not import each other
either: they are siblings, each with its own job.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "metalabel"

# room -> level; higher levels may import lower ones, never the other way round
LEVELS: dict[str, int] = {
    "base": 0,  # errors, atomic file writes and the version: below everything
    "data": 1,
    "meta": 2,
    "store": 3,
    "label": 4,
    "generate": 5,
    "evaluate": 5,
    "loop": 6,
    # The front door sits above everything it fronts: Project.export and Project.report call these rooms
    # (DESIGN's own example does), and they need only the store and the checked pool (store/pool.py).
    "export": 7,
    "serve": 7,
    "report": 7,
    # Running the heavy steps on a Ray cluster (the pool's embedding today; the round's prediction and
    # meta-training next), called by the front door: it may use every room of the labeling run below it.
    "scale": 7,
    "project": 8,
    # A library of finished projects reads them through the front door (their stores and pools)
    # and hands the CLI a learner for the next project's run.
    "library": 9,
    "cli": 10,
    "api": 11,  # the package's own __init__: the front-door names
}

# today's modules -> rooms; a folder maps as a whole, a top-level module by its name
ROOM_OF_TOP: dict[str, str] = {
    "errors": "base",
    "files": "base",
    "_version": "base",
    "data": "data",
    "datasets": "data",
    "meta": "meta",
    "store": "store",
    "label": "label",
    "rules": "label",  # labeling functions and their label model: the round model's evidence beside it
    "generate": "generate",
    "evaluate": "evaluate",
    "loop": "loop",
    "pipeline": "loop",
    "project": "project",
    "library": "library",
    "export": "export",
    "serve": "serve",
    "report": "report",
    "scale": "scale",
    "cli": "cli",
    "__main__": "cli",
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    importer_room: str
    imported: str
    imported_room: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.importer_room} imports {self.imported} "
            f"({self.imported_room}, not below {self.importer_room})"
        )


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str | None:
    """The room of a ``metalabel...`` module name; None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != "metalabel":
        return None
    if len(parts) == 1:
        return "api"
    top = parts[1]
    if top not in ROOM_OF_TOP:
        raise AssertionError(f"metalabel.{top} sits in no room; add it to ROOM_OF_TOP in {Path(__file__).name}")
    return ROOM_OF_TOP[top]


def resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, at any depth; ``from pkg import sub`` names ``pkg.sub``."""
    importer = module_name(path, src)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_from(node, importer, is_package)
            if base != "metalabel":  # `from metalabel import x` is judged by what x is
                found.append((node.lineno, base))
            # `from metalabel import project` reaches the project room, not just the package
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            target = node.args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                found.append((node.lineno, target.value))
            elif isinstance(target, ast.JoinedStr) and target.values and isinstance(target.values[0], ast.Constant):
                # f"metalabel.data.sources.{name}": the constant prefix names the room
                found.append((node.lineno, str(target.values[0].value).rstrip(".")))
    return found


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in {"import_module", "__import__"} and bool(node.args)


def _known_room(module: str) -> str | None:
    # `from metalabel.data import dataset` yields metalabel.data.dataset (a module) and metalabel.data;
    # `from metalabel import __version__` yields metalabel.__version__, which is no room: fall back to the package
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "metalabel" and parts[1] not in ROOM_OF_TOP:
        return "api"
    return room_of(module)


def violations() -> list[Violation]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        importer_room = room_of(importer)
        assert importer_room is not None
        seen: set[tuple[int, str]] = set()
        for line, module in imported_modules(path):
            imported_room = _known_room(module)
            if imported_room is None or imported_room == importer_room or (line, imported_room) in seen:
                continue
            if LEVELS[imported_room] >= LEVELS[importer_room]:
                seen.add((line, imported_room))  # `from a.b import c` is one import, not two
                found.append(Violation(str(path.relative_to(SRC.parent)), line, importer_room, module, imported_room))
    return found


# Upward imports that files being rewritten right now still hold; each says how it goes away.
# Delete an entry when its import is gone (test_pending_violations_are_still_there says when).
PENDING: dict[tuple[str, str], str] = {
}


def test_every_module_sits_in_a_room():
    for path in PACKAGE.rglob("*.py"):
        room_of(module_name(path))  # raises for a module no room claims


def test_nothing_imports_from_a_room_above_it():
    found = [v for v in violations() if (v.path, v.imported) not in PENDING]
    assert not found, "upward imports (move the job down, do not hide the import):\n" + "\n".join(map(str, found))


def test_pending_violations_are_still_there():
    # the list only shrinks: an entry whose import is gone must be deleted, so it cannot excuse a new one
    present = {(v.path, v.imported) for v in violations()}
    gone = sorted(set(PENDING) - present)
    assert not gone, f"fixed, delete from PENDING in {Path(__file__).name}: {gone}"


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("source", "imported", "room"),
    [
        ("import metalabel.project\n", "metalabel.project", "project"),
        ("def f():\n    from metalabel.export import write\n", "metalabel.export", "export"),
        ("def f():\n    from metalabel import cli\n", "metalabel.cli", "cli"),
        ("from ..pipeline import LabelingRun\n", "metalabel.pipeline", "loop"),
        ("import importlib\nimportlib.import_module('metalabel.report.html')\n", "metalabel.report.html", "report"),
    ],
)
def test_an_upward_import_is_caught_at_any_depth(tmp_path, source, imported, room):
    # the checker must see top-level, lazy, relative and dynamic imports; a check that sees none passes vacuously
    fake_src = tmp_path / "src"
    path = _write(fake_src, "metalabel/label/planted.py", source)
    modules = [module for _, module in imported_modules(path, fake_src)]
    assert imported in modules
    assert room_of(imported) == room
    assert LEVELS[room] > LEVELS["label"]


def test_the_checker_reads_the_real_tree():
    # guards against a path mistake that would make the main test pass on zero files
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    imports = [module for path in files for _, module in imported_modules(path)]
    assert any(_known_room(m) == "store" for m in imports)
