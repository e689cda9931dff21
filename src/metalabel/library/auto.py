"""A project setting that adds the project to a library whenever a run of it ends.

The setting lives in the project's own store (its meta table), so it travels with the
project and every front end honours it: ``metalabel run`` adds the project after each run
that ends without an error, and Python code calls ``add_finished_run`` after ``project.run``
(the library sits above the project, so the project cannot call it itself). A project
already in the library is refreshed: its entry is replaced with what the latest run left.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from metalabel.library.entries import EntryManifest
from metalabel.library.folder import Library

if TYPE_CHECKING:
    from metalabel.project import Project

AUTO_ADD_KEY = "library_auto_add"
"""The project meta key holding the library folder to add the project to; empty: off."""


def set_auto_add(project: Project, library: Library | None) -> None:
    """Add ``project`` to ``library`` after each of its runs from now on; None turns the setting off."""
    with project.writer_lock(command="library auto-add"):
        project.store.set_meta(AUTO_ADD_KEY, "" if library is None else str(Path(library.folder).resolve()))


def auto_add_library(project: Project) -> Library | None:
    """The library ``project`` is added to after its runs, None if the setting is off (or was never set)."""
    folder = project.store.meta().get(AUTO_ADD_KEY)
    return Library(folder) if folder else None


def add_finished_run(project: Project, *, encoder: str | None = None, progress: bool = False) -> EntryManifest | None:
    """Add (or refresh) ``project`` in the library its setting names, in the space it was run in (``encoder``:
    as given to ``run``); None when the setting is off. A refusal (another project of that name, another
    encoder space) is the ``Library.add`` error, and the library is left as it was."""
    library = auto_add_library(project)
    if library is None:
        return None
    return library.add(project, encoder=encoder, replace=True, progress=progress)
