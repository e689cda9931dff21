"""A library of a team's finished labeling projects, and meta-training on it (issue 16).

Each finished project is kept as its labeled items' embeddings in the encoder space it
was labeled in, with every label's provenance; a learner meta-trained across the
projects starts the next project's loop::

    library = Library()                       # $METALABEL_LIBRARY or ~/.metalabel/library
    library.add(Project.open("tickets-march"))
    model = library.train(algo="protonet")
    project.run(model.learner, encoder=model.run_encoder, oracle=...)
    set_auto_add(project, library)            # from now on, add_finished_run(project) after each run
"""

from metalabel.library.auto import add_finished_run, auto_add_library, set_auto_add
from metalabel.library.entries import EncoderSpace, EntryManifest, LibraryEntry
from metalabel.library.folder import LIBRARY_ENV, ImportResult, Library, default_library_folder
from metalabel.library.runs import StrategyRecord, StrategySuggestion
from metalabel.library.train import (
    LibraryModel,
    ProjectEpisodes,
    TaskSource,
    load_library_model,
    task_sources,
    train_on_library,
)

__all__ = [
    "LIBRARY_ENV",
    "EncoderSpace",
    "EntryManifest",
    "ImportResult",
    "Library",
    "LibraryEntry",
    "LibraryModel",
    "ProjectEpisodes",
    "StrategyRecord",
    "StrategySuggestion",
    "TaskSource",
    "add_finished_run",
    "auto_add_library",
    "default_library_folder",
    "load_library_model",
    "set_auto_add",
    "task_sources",
    "train_on_library",
]
