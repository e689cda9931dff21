"""The library folder: finished projects as entries, one file each, and the learner meta-trained on them.

    LIBRARY/
      projects/NAME.npz    one entry per project (metalabel.library.entries), written atomically
      model/               the learner `library train` made (save_learner format + library-model.json)

A library holds one encoder space: embeddings from different encoders cannot be compared,
so the first entry fixes it and an entry in another space is refused (use another library).
Every write is one atomic file (or folder) write, after every check, so a refused add or
import leaves the library as it was.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metalabel._version import __version__
from metalabel.errors import BadInputError, DataNotFoundError
from metalabel.files import write_atomically
from metalabel.library.entries import (
    KEPT_SOURCES,
    TABLE_ENCODER,
    EncoderSpace,
    EntryManifest,
    LibraryEntry,
    default_entry_name,
    entry_name,
    make_entry,
)
from metalabel.library.runs import (
    CertificationPrior,
    StrategySuggestion,
    certification_prior,
    certification_record,
    strategy_records,
    suggest_strategy,
)
from metalabel.library.train import LibraryModel, load_library_model, train_on_library
from metalabel.store import LabelSource

if TYPE_CHECKING:
    from metalabel.project import Project

LIBRARY_ENV = "METALABEL_LIBRARY"
EXPORT_FORMAT = 1
EXPORT_MANIFEST = "manifest.json"


def default_library_folder() -> Path:
    """``$METALABEL_LIBRARY`` if set, else ``~/.metalabel/library``."""
    return Path(os.environ.get(LIBRARY_ENV) or Path.home() / ".metalabel" / "library")


@dataclass(frozen=True)
class ImportResult:
    """What ``Library.import_file`` added, and where the file said it came from."""

    added: list[str]
    metalabel_version: str
    exported_at: str


class Library:
    """A team's finished labeling projects, kept as labeled embeddings for meta-training."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_library_folder()

    @property
    def projects_folder(self) -> Path:
        return self.folder / "projects"

    @property
    def model_folder(self) -> Path:
        return self.folder / "model"

    def _entry_path(self, name: str) -> Path:
        return self.projects_folder / f"{entry_name(name)}.npz"

    # -- reading
    def names(self) -> list[str]:
        if not self.projects_folder.is_dir():
            return []
        return sorted(path.stem for path in self.projects_folder.glob("*.npz") if not path.name.startswith("."))

    def entry(self, name: str) -> LibraryEntry:
        path = self._entry_path(name)
        if not path.is_file():
            raise DataNotFoundError(f"no project named {name!r} in the library", path=self.folder,
                                    hint=f"`metalabel library list` shows what it holds ({self._held()})")
        return LibraryEntry.from_bytes(path.read_bytes(), where=path)

    def entries(self) -> list[LibraryEntry]:
        return [self.entry(name) for name in self.names()]

    def manifests(self) -> list[EntryManifest]:
        return [entry.manifest for entry in self.entries()]

    def encoder(self) -> EncoderSpace | None:
        """The library's encoder space (its entries'), None while it is empty."""
        manifests = self.manifests()
        return manifests[0].encoder if manifests else None

    def _held(self) -> str:
        names = self.names()
        return ", ".join(names) if names else "nothing yet"

    # -- adding and removing
    def add(self, project: Project, *, name: str | None = None, with_content: bool = False,
            encoder: str | None = None, label_space: str | None = None, replace: bool = False,
            progress: bool = False) -> EntryManifest:
        """Keep ``project``'s labeled items (human, seed and accepted model labels) as an entry.

        The items are embedded as the labeling loop embeds them (``encoder``: the one the
        project was run with; default, as for ``run``, MiniLM for text and EfficientNet-Lite0
        for images; table rows are their standardized columns). ``name`` defaults to the
        project's name; ``label_space`` names a label space the project shares with others
        (their classes may then meet in one episode). ``with_content`` also keeps the items.
        What each query strategy of the project's runs bought is kept too (``suggest_strategy``).
        ``replace``: an entry of the same name added from this same project folder is replaced
        (the project was run further). Refused, with the library unchanged: a name already held
        (by another project, with ``replace``), a project without labels, an encoder other than the
        library's.
        """
        from metalabel.label.round_model import pool_inputs

        name = entry_name(name) if name is not None else default_entry_name(project.name)
        held = self._entry_path(name).exists()
        if held and replace and self.entry(name).manifest.project_folder == str(Path(project.folder).resolve()):
            held = False
        if held:
            raise BadInputError(f"the library already holds a project named {name!r}", path=self.folder,
                                hint=f"`metalabel library remove {name}` first, or add it under another --name")
        pool = project.load_pool()
        columns = np.asarray(pool.items).shape[1] if pool.modality == "tabular" else None
        space = _encoder_space(encoder, pool.modality, columns)
        self._check_space(space, what=f"project {project.name!r}")
        position = {uri: i for i, uri in enumerate(pool.uris)}
        labels = [label for label in project.store.active_labels()
                  if LabelSource(label.source) in KEPT_SOURCES and label.uri in position]
        rows = np.array([position[label.uri] for label in labels], dtype=np.int64)
        hashes = {item.uri: item.content_hash for item in project.store.each_item()}
        rounds = project.store.rounds()
        embeddings = np.zeros((0, space.dim), dtype=np.float32)
        if labels:  # embedding is the slow part: only once the project has something to keep
            x = pool_inputs(pool, None, encoder=None if pool.modality == "tabular" else space.name,
                            progress=progress)
            embeddings = x.flatten(1).numpy()[rows]
        content = _content(pool.items, rows) if with_content else None
        entry = make_entry(name=name, project=project.name, project_folder=project.folder, modality=pool.modality,
                           encoder=space, class_names=project.store.classes(), label_space=label_space,
                           embeddings=embeddings, labels=labels, uris=[label.uri for label in labels],
                           hashes=[hashes[label.uri] for label in labels], content=content,
                           strategies=strategy_records(rounds), certification=certification_record(rounds))
        self.projects_folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self._entry_path(name), entry.to_bytes())
        return entry.manifest

    def remove(self, name: str) -> None:
        path = self._entry_path(name)
        if not path.is_file():
            raise DataNotFoundError(f"no project named {name!r} in the library", path=self.folder,
                                    hint=f"`metalabel library list` shows what it holds ({self._held()})")
        path.unlink()

    def _check_space(self, space: EncoderSpace, *, what: str, among: list[EntryManifest] | None = None) -> None:
        held = self.manifests() if among is None else among
        if held and held[0].encoder != space:
            raise BadInputError(f"{what} lives in encoder space {space}, but this library holds {held[0].encoder} "
                                f"embeddings ({held[0].name}, ...), which cannot be compared with it",
                                path=self.folder, hint="use another --library folder for this encoder, or add "
                                "the project with the library's --encoder")

    def suggest_strategy(self, modality: str) -> StrategySuggestion | None:
        """The query strategy that bought the most certified coverage per answer on the library's projects of
        ``modality``; None where fewer than two strategies were tried enough to compare."""
        return suggest_strategy((m.name, m.strategies) for m in self.manifests() if m.modality == modality)

    def certification_prior(self, modality: str, *, target_precision: float) -> CertificationPrior | None:
        """How the library's projects of ``modality`` were first certified at ``target_precision`` (thresholds,
        reference answers): a prior to plan by, never evidence for a new project's acceptance."""
        return certification_prior((m.certification for m in self.manifests() if m.modality == modality),
                                   target_precision=target_precision)

    # -- meta-training
    def train(self, **options: Any) -> LibraryModel:
        """Meta-train on every project the library holds and keep the learner in ``LIBRARY/model``.

        ``options``: see ``metalabel.library.train.train_on_library`` (``algo``, ``learner``,
        ``ways``, ``shots``, ``steps``, ``validation``, ``seed``, ...).
        """
        return train_on_library(self.entries(), out=self.model_folder, **options)

    def model(self) -> LibraryModel:
        """The learner ``train`` made, to start a new project from: ``project.run(model.learner,
        encoder=model.run_encoder, ...)``. Refused when the library holds another encoder space now."""
        if not self.model_folder.is_dir():
            raise DataNotFoundError("the library has no trained model yet", path=self.model_folder,
                                    hint="run `metalabel library train` first")
        model = load_library_model(self.model_folder)
        space = self.encoder()
        if space is not None and space != model.encoder:
            raise BadInputError(f"the library's model works in {model.encoder}, but its projects are now in {space}",
                                path=self.model_folder, hint="train it again with `metalabel library train`")
        return model

    # -- one file to share
    def export_file(self, path: str | Path) -> Path:
        """Write every entry into one zip: ``manifest.json`` (which projects, their metalabel versions) + entries."""
        path = Path(path)
        entries = self.names()
        if not entries:
            raise BadInputError("the library is empty: nothing to export", path=self.folder,
                                hint="add finished projects with `metalabel library add PROJECT`")
        manifest = {"format": EXPORT_FORMAT, "metalabel_version": __version__,
                    "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "projects": [m.to_json() for m in self.manifests()]}

        def write(file: Path) -> None:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:  # entries are compressed
                archive.writestr(EXPORT_MANIFEST, json.dumps(manifest, indent=2))
                for name in entries:
                    archive.write(self._entry_path(name), f"projects/{name}.npz")

        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomically(path, write)

    def import_file(self, path: str | Path) -> ImportResult:
        """Add every entry of a ``library export`` file; all or nothing.

        Refused, with the library unchanged: a file that is not an export, a damaged entry,
        a project name the library already holds, an encoder space other than the library's.
        """
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError("no such library export", path=path,
                                    hint="make one with `metalabel library export FILE`")
        try:
            with zipfile.ZipFile(path) as archive:
                manifest = json.loads(archive.read(EXPORT_MANIFEST))
                listed = [EntryManifest.from_json(item, where=path) for item in manifest["projects"]]
                entries = [LibraryEntry.from_bytes(archive.read(f"projects/{entry_name(m.name)}.npz"),
                                                   where=f"{path}:projects/{m.name}.npz") for m in listed]
                version, exported_at = str(manifest["metalabel_version"]), str(manifest["exported_at"])
        except (zipfile.BadZipFile, KeyError, TypeError, json.JSONDecodeError) as error:
            raise BadInputError(f"not a metalabel library export ({type(error).__name__}: {error})", path=path,
                                hint="use a file written by `metalabel library export`") from error
        if int(manifest.get("format", 0)) > EXPORT_FORMAT:
            raise BadInputError(f"library export format {manifest['format']} is newer than this metalabel reads",
                                path=path, hint="upgrade metalabel")
        if not entries:
            raise BadInputError("the export holds no projects", path=path)
        held = set(self.names())
        for entry in entries:
            if entry.name in held:
                raise BadInputError(f"the library already holds a project named {entry.name!r}", path=path,
                                    hint=f"`metalabel library remove {entry.name}` first, or import into another "
                                         "--library folder")
            held.add(entry.name)
            # the file's own entries must agree too, and with what the library holds
            self._check_space(entry.manifest.encoder, what=f"project {entry.name!r} of {path}",
                              among=self.manifests() or [entries[0].manifest])
        self.projects_folder.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            write_atomically(self._entry_path(entry.name), entry.to_bytes())
        return ImportResult([entry.name for entry in entries], version, exported_at)


def _encoder_space(encoder: str | None, modality: str, columns: int | None) -> EncoderSpace:
    """The space ``pool_inputs`` puts a pool of ``modality`` in with ``encoder`` (None: the loop's default)."""
    from metalabel.data.encoders import check_encoder, default_encoder, get_encoder

    if modality == "tabular":
        if encoder is not None:
            check_encoder(encoder, modality)  # refuses any name, saying table rows take none
        assert columns is not None
        return EncoderSpace(TABLE_ENCODER, columns, "standardized")
    name = check_encoder(encoder or default_encoder(modality), modality)
    model = get_encoder(name)  # cheap: the weights load on the first encode
    options = "".join(f";{key}={value}" for key, value in sorted(model.options.items()))
    return EncoderSpace(name, model.dim, model.version + options)


def _content(items: np.ndarray | Sequence[str], rows: np.ndarray) -> np.ndarray:
    """The labeled items themselves: text as strings, images and table rows as their arrays."""
    if not isinstance(items, np.ndarray):  # texts: a list, or MappedTexts read from a file (a project's pool)
        return np.array([str(items[int(row)]) for row in rows])
    return items[rows]
