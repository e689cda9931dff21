"""A labeling project on disk: the front door behind `metalabel init` and `metalabel status`.

A project is a folder holding ``project.db`` (see ``metalabel.store``). ``Project.create``
checks every input before it writes anything, builds the project in a hidden staging
folder and renames it into place at the end, so a bad input or a crash never leaves a
half-made project behind.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metalabel.data.dataset import UNLABELED, LabeledDataset
from metalabel.data.sources._common import csv_rows
from metalabel.errors import (
    BadInputError,
    DataNotFoundError,
    EmptyClassError,
    PoolChangedError,
    UnknownLabelError,
)
from metalabel.files import IfExists, staged_folder
from metalabel.store import (
    DB_FILENAME,
    Item,
    ItemRecord,
    LabelSource,
    ProjectStore,
    content_hash,
)
from metalabel.store.lock import WriterLock
from metalabel.store.pool import POOL_SPEC_KEY, check_pool, has_pool_spec, reload_pool, stored_positions
from metalabel.store.store import check_class_name

if TYPE_CHECKING:
    from metalabel.evaluate.records import Scorecard
    from metalabel.export import ExportFormat
    from metalabel.rules import LabelingFunction, RuleAnalysis, RuleSet, RuleVotes

SeedLabels = str | Path | Mapping[str | int, str] | None
"""A CSV file (columns ``uri,label`` or ``item,label``), a dict ``{uri or pool index: class}``,
or None for the pool's own labels."""


class Project:
    """A labeling project: its items, classes and every label with its provenance."""

    def __init__(self, store: ProjectStore, *, warnings: Sequence[str] = ()) -> None:
        """Internal: use ``Project.create`` or ``Project.open``."""
        self.store = store
        self.warnings = tuple(warnings)
        """What ``create`` noticed but accepted (duplicate items, repeated seed labels, ...), and
        what ``run`` did on its own (pool items added since init)."""
        self._pool: LabeledDataset | None = None
        self._pool_checked = 0
        """How many of the store's items ``_pool`` was checked against. Items are only ever added: one another
        process added since was hashed from the pool as that process read it, not as ``_pool`` holds it."""
        self._lock = WriterLock(store.folder)

    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        pool: LabeledDataset,
        labels: SeedLabels = None,
        classes: Sequence[str] | None = None,
        name: str | None = None,
    ) -> Project:
        """Start a project in a new ``folder`` from a pool of items and a few seed labels.

        Seed labels (written with source "imported") come from ``labels``: a CSV file with
        columns ``uri,label`` (or ``item,label``), a dict ``{uri or pool index: class}``, or,
        when None, the pool's own labels. A uri may be written in full or as a unique
        trailing part of the pool's uri (``cat/1.png`` for ``/data/pool/cat/1.png``).

        ``classes`` fixes the class list and its order; without it the classes are the
        pool's class names (pool labels) or the seed labels' names, sorted. Every class
        needs at least one seed label, since a few-shot model cannot learn a class it has
        never seen (``EmptyClassError``). The project is named after the folder unless
        ``name`` is given.
        """
        folder = Path(folder)
        _check_folder_free(folder)
        _check_pool(pool)
        warnings: list[str] = []
        if pool.skipped:
            where, why = pool.skipped[0]
            warnings.append(f"{len(pool.skipped)} items were skipped while reading the pool (first: {where}: {why})")

        seed_file = Path(labels) if isinstance(labels, (str, Path)) else None
        seeds = _one_seed_per_item(_read_seeds(labels, pool), warnings)
        class_names = _resolve_classes(classes, list(pool.class_names) if labels is None else None, seeds)
        _check_every_class_seeded(class_names, seeds, seed_file=seed_file)
        _warn_of_case_variants(class_names, warnings)

        hashes = [content_hash(item) for item in pool.items]
        _warn_of_duplicate_content(pool.uris, hashes, warnings)

        # _check_folder_free found the place free: anything there by the end was made meanwhile
        with staged_folder(folder, if_exists=IfExists.REFUSE, what="the project") as staging:
            with ProjectStore.create(staging, name=name or folder.name) as store, store.batch():
                store.set_classes(class_names)
                item_ids = store.add_items(
                    ItemRecord(uri, item_hash, pool.modality) for uri, item_hash in zip(pool.uris, hashes, strict=True)
                )
                for seed in seeds:
                    store.add_label(item_ids[seed.index], seed.class_name, source="imported")
                store.set_meta("pool", pool.name)
                store.set_meta("modality", pool.modality)
                if pool.reload_spec is not None:
                    # the store keeps uris and hashes, not content: remember how to load the pool again
                    store.set_meta(POOL_SPEC_KEY, json.dumps(pool.reload_spec))
                if seed_file is not None:
                    # Provenance of the seed: which file, and its hash, in case it changes later.
                    store.add_artifact("seed-labels", seed_file, meta={"labels": len(seeds)})
        project = cls(ProjectStore.open(folder), warnings=warnings)
        project._pool, project._pool_checked = pool, len(hashes)
        return project

    @classmethod
    def open(cls, folder: str | Path, *, pool: LabeledDataset | None = None) -> Project:
        """An existing project; a missing one is a ``DataNotFoundError`` that says to run `metalabel init`.

        ``pool`` gives the items again for a project made from an in-memory data set.
        """
        project = cls(ProjectStore.open(folder))
        if pool is not None:
            project._pool_checked = project.store.item_count()  # counted first: one added meanwhile is unchecked
            project._pool = check_pool(project.store, pool)
        return project

    @property
    def folder(self) -> Path:
        return self.store.folder

    @property
    def name(self) -> str:
        return self.store.name

    def load_pool(self) -> LabeledDataset:
        """The pool this project was made from, loaded again and checked against the stored content hashes.

        Raises ``PoolChangedError`` naming an item whose content changed or that is gone.
        Items the pool gained since init are allowed (see ``add_new_items``).
        """
        if self._pool is None:
            self._pool_checked = self.store.item_count()  # counted first: one added meanwhile is unchecked
            self._pool = reload_pool(self.store)
        return self._pool

    def _check_pool_against_store(self) -> None:
        """A pool read earlier, checked against the items the store gained since (another process's ``add-items``),
        so no question shows content other than the stored: on taking the writer lock, and in ``plan``, which
        reads without it."""
        if self._pool is None:
            return
        items = self.store.item_count()
        if items == self._pool_checked:
            return
        if has_pool_spec(self.store):
            self._pool = None  # read again, as the files are now, on its next use
        else:
            self._pool, self._pool_checked = check_pool(self.store, self._pool), items

    def can_load_pool(self) -> bool:
        """Whether ``load_pool`` has a pool to load (one given or loaded already, or a recorded spec)."""
        return self._pool is not None or has_pool_spec(self.store)

    @contextmanager
    def writer_lock(self, *, command: str | None = None) -> Iterator[None]:
        """Hold the project's writer lock for the block: one writing process per project.

        Raises ``ProjectLockedError`` at once, naming the other process, if another holds
        it. Re-entrant for this ``Project`` object. ``run``, ``add_new_items`` and
        ``evaluate`` take it themselves; take it around any other job that writes (an
        import of answers). A killed holder's lock is free again by itself.
        """
        taken = not self._lock.held
        self._lock.acquire(command=command)
        try:
            if taken:
                self._check_pool_against_store()
            yield
        finally:
            self._lock.release()

    def new_pool_items(self) -> list[int]:
        """Positions in the pool of items the project does not hold yet (the pool grew since init)."""
        pool = self.load_pool()
        stored = np.zeros(len(pool), dtype=bool)  # not a set of the store's uris: a run checks this each time
        for _, position in stored_positions(self.store, pool.uris):
            if position is not None:
                stored[position] = True
        return np.flatnonzero(~stored).tolist()

    def add_new_items(self) -> list[Item]:
        """Add the items the pool gained since init (rows appended, images added); returns them.

        They are content-hashed like the items ``create`` adds and start unlabeled. Items
        already in the project are checked first (``PoolChangedError`` if one changed or is
        gone). Holds the writer lock. Returns ``[]`` when the pool has nothing new.
        """
        with self.writer_lock():
            pool = self.load_pool()
            new = self.new_pool_items()
            if not new:
                return []
            modality = self.store.meta().get("modality", pool.modality)
            if pool.modality != modality:
                raise PoolChangedError(f"the pool of project {self.name!r} now holds {pool.modality} items, "
                                       f"not {modality}", hint="restore the pool the project was made from")
            records = [ItemRecord(pool.uris[index], content_hash(pool.items[index]), pool.modality) for index in new]
            ids = self.store.add_items(records)
            self._pool_checked += len(ids)  # hashed from the pool held, under the lock
            added = set(ids)
            return [item for item in self.store.each_item() if item.id in added]

    def import_answers(self, path: str | Path, *, changed: bool = False):
        """Record the answers in a Label Studio export of the tasks this project's queue wrote.

        ``path`` is the Label Studio project's "JSON" or "JSON-MIN" export. All or nothing:
        every task is checked against the project first (a task of another project, an item
        that changed, a class the project lacks refuses the whole file and the store is left
        as it was), then everything is recorded in one transaction. Holds the writer lock
        (``ProjectLockedError`` if another process writes to the project). Returns a
        ``metalabel.label.oracle.RecordedAnswers`` (answered, dismissed, already closed,
        disagreements); see ``LabelStudioQueue.import_annotations``: an annotator's later answer is her
        changed answer (the first stays in its history). ``changed``: the annotations are ones their
        annotators changed (an ``ANNOTATION_UPDATED`` the ML backend kept while it could not record it):
        one as old as the answer on record still changes it.
        """
        from metalabel.label.oracle import LabelStudioQueue

        with self.writer_lock():
            return LabelStudioQueue(self.folder / "labelstudio").import_annotations(path, store=self.store,
                                                                                  changed=changed)

    def import_kept_annotations(self):
        """Record the Label Studio annotations the ML backend kept but could not record (a run held the project),
        oldest first, each as the event it was; returns a ``metalabel.label.oracle.KeptAnnotations`` (those
        recorded, those refused with why, and where a busy store stopped it: they stay kept). Holds the writer
        lock."""
        from metalabel.label.oracle import record_kept_annotations

        with self.writer_lock():
            return record_kept_annotations(self.store)

    def run(self, learner=None, *, oracle, rules: str | Path | RuleSet | Sequence[LabelingFunction] | None = None,
            ray: str | None = None, **options: Any):
        """Label the pool: rounds of adapt, calibrate, accept at a target precision and ask ``oracle``.

        ``learner`` is a meta-trained learner (``metalabel.meta_train`` or ``load_learner``);
        None uses the nearest class mean in a pretrained encoder's space. ``options``:
        see ``metalabel.pipeline.RunOptions`` (``target_precision``, ``budget``, ...),
        plus ``encoder``, ``gold`` and ``progress``. Returns a ``RunResult``.

        The whole run holds the writer lock (``ProjectLockedError`` if another process
        writes to the project). Items the pool gained since init are added first, and
        ``warnings`` says how many.

        ``rules``: labeling functions whose votes are evidence beside the model
        (``metalabel.rules``): a rules file (``.py`` or ``.toml``, kept in the project for
        later runs and ``status``), a list of labeling functions or a ``RuleSet``; None
        uses the rules file the project was last run with, if any. A rule voting for a
        class the project lacks is refused before anything changes.

        ``ray``: embed the pool on a Ray cluster first (``"local"`` starts one on this machine,
        otherwise a cluster's address; ``metalabel.scale.embed_on_ray``), into the cache the run
        then reads. Everything else, the store and its guarantees included, runs here as without it.
        """
        from metalabel.pipeline import run_labeling  # the loop sits above the project in the layering

        with self.writer_lock():
            options["rules"] = self._rule_votes(rules)
            added = self.add_new_items()
            if added:
                self.warnings = (*self.warnings, f"{len(added)} items the pool gained since init were added to the "
                                 f"project (first: {added[0].uri}); they start unlabeled")
            if ray is not None:
                self._embed_on_ray(learner, ray, encoder=options.get("encoder"), progress=options.get("progress", True))
            return run_labeling(self.store, self.load_pool(), learner, oracle=oracle, **options)

    def _embed_on_ray(self, learner, address: object, *, encoder: str | None, progress: bool) -> None:
        """The pool's embedding made on a Ray cluster, into the cache ``run`` reads; a warning if it needs none."""
        from metalabel.data.encoders import available
        from metalabel.label.round_model import feature_space
        from metalabel.scale import embed_on_ray

        if not isinstance(address, str) or not address:
            raise BadInputError(f"ray must be 'local' or a Ray cluster's address, got {address!r}")
        pool = self.load_pool()
        space = feature_space(pool, learner, encoder=encoder)
        if space not in available():
            self.warnings = (*self.warnings, f"the model reads {space}, not an encoder's embeddings: nothing was run "
                             "on Ray")
            return
        embed_on_ray(pool, space, address=address, progress=progress)

    def _rule_votes(self, rules: str | Path | RuleSet | Sequence[LabelingFunction] | None) -> RuleVotes | None:
        """The rules' votes on the pool, every rule checked against the project's classes; a file is kept."""
        from metalabel.rules import keep_rules_file

        rule_set = self._rule_set(rules)
        if rule_set is None:
            return None
        votes = rule_set.votes(self.load_pool(), self.store.classes())
        if isinstance(rules, (str, Path)):
            keep_rules_file(self.store, rules)
        return votes

    def _rule_set(self, rules: str | Path | RuleSet | Sequence[LabelingFunction] | None) -> RuleSet | None:
        from metalabel.rules import RuleSet, load_rules, saved_rules

        if rules is None:
            return saved_rules(self.store)
        if isinstance(rules, (str, Path)):
            return load_rules(rules, classes=self.store.classes())
        return rules if isinstance(rules, RuleSet) else RuleSet.of(list(rules))

    def rule_analysis(self, rules: str | Path | RuleSet | Sequence[LabelingFunction] | None = None
                      ) -> RuleAnalysis | None:
        """Each rule's coverage, overlaps, conflicts and accuracy on the human labels (``metalabel.rules``).

        ``rules`` as for ``run`` (nothing is kept); None: the project's rules file, and
        None is returned when the project has none.
        """
        from metalabel.rules import analyze_rules

        rule_set = self._rule_set(rules)
        if rule_set is None:
            return None
        classes = self.store.classes()
        pool = self.load_pool()
        votes = rule_set.votes(pool, classes)
        position = {uri: i for i, uri in enumerate(pool.uris)}
        human = [label for label in self.store.active_labels()
                 if LabelSource(label.source).trusted and label.uri in position]
        return analyze_rules(votes, np.array([position[label.uri] for label in human], dtype=np.int64),
                             np.array([classes.index(label.class_name) for label in human], dtype=np.int64))

    def plan(self, learner=None, *, coverage: float | None = None, **options: Any):
        """More reference and active answers expected to certify ``coverage`` at the target; writes nothing.

        See ``metalabel.pipeline.plan_project``; returns a ``metalabel.label.certify.BudgetPlan``.
        """
        from metalabel.pipeline import plan_project

        self._check_pool_against_store()
        # the project's rules file, if it has one: the same heads compete as in its runs
        return plan_project(self.store, self.load_pool(), learner, coverage=coverage, rules=self._rule_votes(None),
                            **options)

    def evaluate(self, learner=None, **options: Any) -> Scorecard:
        """The scorecard of the labels as they stand; see ``metalabel.pipeline.evaluate_project``.

        Holds the writer lock (it writes ``scorecard.json`` and its artifact row, nothing else).
        """
        from metalabel.pipeline import evaluate_project

        with self.writer_lock():
            return evaluate_project(self.store, self.load_pool(), learner, rules=self._rule_votes(None), **options)

    def report(self, out: str | Path | None = None) -> Path:
        """Write the HTML report (default ``PROJECT/report.html``); see ``metalabel.report.collect``."""
        from metalabel.report.collect import write_project_report

        return write_project_report(self, out)

    def export(self, out: str | Path, *, format: ExportFormat = "parquet", **options: Any):
        """Write the labeled data set with provenance; see ``metalabel.export.export_project``."""
        from metalabel.export import export_project

        # a pool made in memory is the copy checked when it was given; a recorded one is read afresh
        in_memory = None if has_pool_spec(self.store) else self._pool
        return export_project(self.store, out, format=format, pool=in_memory, **options)

    def status(self) -> dict[str, Any]:
        """Items, classes, labels by source and class, open questions, rounds, disagreements (JSON-ready).

        ``retracted_labels`` counts the model labels rounds retracted; ``certified`` holds the
        last finished round's certified figures (None before any round finished): ``round``,
        ``target_precision``, ``delta``, ``certified_precision`` (the lower bound at
        ``1 - delta``, None when nothing is certified), ``estimated_precision`` (the point
        estimate), ``coverage``, ``threshold``, ``reference_answers``, ``reference_needed``,
        ``model_labels``, ``retracted_in_round``, ``certificate`` (the loop's line) and
        ``summary`` (the figures in one sentence). ``unrecorded_annotations``: the files of Label Studio
        annotations the ML backend kept but could not record (``metalabel import-answers`` records one).
        """
        from metalabel.label.oracle import unrecorded_annotations

        with self.store.reading():  # one moment: a run or a serve session may commit between two reads
            meta = self.store.meta()
            return {
                "folder": str(self.folder),
                "pool": meta.get("pool"),
                "modality": meta.get("modality"),
                **self.store.summary(),
                "retracted_labels": len(self.store.retracted_labels()),
                "unrecorded_annotations": [str(path) for path in unrecorded_annotations(self.store)],
                "certified": self._last_certified(),
            }

    def _last_certified(self) -> dict[str, Any] | None:
        from metalabel.evaluate.records import EarlyRound, RoundCertificate, recorded_before_certification
        from metalabel.evaluate.scorecard import certificate_summary

        # the round that recorded a certificate last admitted the active labels, even if it ended early;
        # not one undone: its labels were taken back, and those it had replaced are the earlier round's again
        finished = [r for r in self.store.rounds() if r.metrics and r.may_hold_active_labels]
        if not finished:
            return None
        last = finished[-1]
        metrics = last.metrics or {}
        what = f"round {last.id}'s metrics"
        target = last.config.get("target_precision")
        if recorded_before_certification(metrics):
            early = EarlyRound.from_json(metrics, what)
            return {"round": last.id, "target_precision": target, "delta": None, "certified_precision": None,
                    "estimated_precision": None, "coverage": early.coverage, "threshold": None,
                    "reference_answers": None, "reference_needed": None, "model_labels": early.model_labels,
                    "retracted_in_round": None, "certificate": "",
                    "summary": "The last round ran before certified acceptance: nothing is certified; "
                               "run another round to certify the labels."}
        certificate = RoundCertificate.from_json(metrics, what)
        return {"round": last.id, "target_precision": target, "delta": certificate.delta,
                "certified_precision": certificate.certified_precision,
                "estimated_precision": certificate.estimated_precision, "coverage": certificate.coverage,
                "threshold": certificate.threshold, "reference_answers": certificate.reference_answers,
                "reference_needed": certificate.reference_needed, "model_labels": certificate.model_labels,
                "retracted_in_round": certificate.retracted, "certificate": certificate.certificate,
                "summary": certificate_summary(certificate, target=target)}

    def close(self) -> None:
        self._lock.release()
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({self.name!r}, folder={str(self.folder)!r})"


@dataclass(frozen=True)
class _Seed:
    """One seed label, with where it was written for error messages."""

    index: int  # the item's position in the pool
    class_name: str
    uri: str
    place: str  # "row 7", "labels['a.png']", "the pool's labels"
    path: Path | None = None
    row: int | None = None


class _PoolIndex:
    """Finds pool items by uri, or by a unique trailing part of one (``cat/1.png``), or by the id a text file's
    row was named by (``posts.csv#p17``: ``p17``)."""

    def __init__(self, uris: Sequence[str]) -> None:
        self.uris = uris
        self._exact = {uri: index for index, uri in enumerate(uris)}
        self._by_suffix: dict[str, list[int]] | None = None  # built on the first miss only

    def find(self, written: str) -> list[int]:
        """Indices of the items ``written`` names: one, none, or several if ambiguous."""
        if written in self._exact:
            return [self._exact[written]]
        if self._by_suffix is None:
            self._by_suffix = {}
            for index, uri in enumerate(self.uris):
                parts = uri.replace("\\", "/").split("/")
                for start in range(1, len(parts)):
                    self._by_suffix.setdefault("/".join(parts[start:]), []).append(index)
                # a row named by its id (path#id): the id alone, which may hold a "/" (2024/07)
                for item_id in {parts[-1].partition("#")[2], "/".join(parts).partition("#")[2]} - {""}:
                    found = self._by_suffix.setdefault(item_id, [])
                    if found[-1:] != [index]:  # a key that is also a trailing part names the item once
                        found.append(index)
        return self._by_suffix.get(written.replace("\\", "/").removeprefix("./"), [])


def _check_folder_free(folder: Path) -> None:
    if not folder.exists():
        return
    if (folder / DB_FILENAME).exists():
        raise BadInputError(
            "a metalabel project already lives here",
            path=folder,
            hint=f"open it with Project.open (`metalabel status {folder}`), or choose another folder",
        )
    if not folder.is_dir() or any(folder.iterdir()):
        raise BadInputError(
            "already exists and is not an empty folder",
            path=folder,
            hint="choose a new folder for the project (or Project.open it if it is one)",
        )


def _check_pool(pool: LabeledDataset) -> None:
    if not isinstance(pool, LabeledDataset):
        raise BadInputError(
            f"pool must be a LabeledDataset, got {type(pool).__name__}",
            hint="read one with metalabel.datasets.imagefolder, read_text or read_table",
        )
    if len(pool) < 2:
        raise BadInputError(
            f"the pool {pool.name!r} holds {len(pool)} item(s); a project needs at least 2 to label",
            hint="point the pool at the folder or file that holds the items to label",
        )
    first_index: dict[str, int] = {}
    for index, uri in enumerate(pool.uris):
        if uri in first_index:
            raise BadInputError(
                f"the pool {pool.name!r} has uri {uri!r} twice (items {first_index[uri]} and {index})",
                hint="each item needs its own uri",
            )
        first_index[uri] = index


def _read_seeds(labels: SeedLabels, pool: LabeledDataset) -> list[_Seed]:
    if labels is None:
        return _seeds_from_pool(pool)
    if isinstance(labels, (str, Path)):
        return _seeds_from_csv(Path(labels), _PoolIndex(pool.uris))
    if isinstance(labels, Mapping):
        return _seeds_from_mapping(labels, _PoolIndex(pool.uris))
    raise BadInputError(
        f"labels must be a CSV path, a dict or None, got {type(labels).__name__}",
        hint="pass labels='seed.csv' (columns uri,label) or a dict {uri: class}",
    )


def _seeds_from_pool(pool: LabeledDataset) -> list[_Seed]:
    return [
        _Seed(int(index), pool.class_names[pool.labels[index]], pool.uris[index], "the pool's labels")
        for index in np.flatnonzero(pool.labels != UNLABELED)
    ]


def _seeds_from_csv(path: Path, pool_index: _PoolIndex) -> list[_Seed]:
    if not path.is_file():
        raise DataNotFoundError("seed label file not found", path=path, hint="give a CSV file with columns uri,label")
    seeds = []
    # utf-8-sig: spreadsheets often save a byte-order mark before the header.
    rows = csv_rows(path, encoding="utf-8-sig", delimiter=",", failed=lambda error, _: _unreadable_seeds(path, error))
    with closing(rows):  # gives the csv module's cell limit back at once, on an error here too
        _, first = next(rows, (1, []))
        header = [column.strip().lower() for column in first]
        item_column = "uri" if "uri" in header else "item"
        if item_column not in header or "label" not in header:
            raise BadInputError(
                "the header must name the columns uri,label (or item,label); "
                f"found {','.join(header) or 'nothing'}",
                path=path,
                row=1,
                hint="put a header line 'uri,label' above the rows",
            )
        item_at, label_at = header.index(item_column), header.index("label")
        for row, cells in rows:  # row: the line where it starts
            cells = [cell.strip() for cell in cells]
            if not any(cells):
                continue
            written = cells[item_at] if item_at < len(cells) else ""
            class_name = cells[label_at] if label_at < len(cells) else ""
            if not written:
                raise BadInputError(
                    f"no {item_column} in this row", path=path, row=row, hint="fill it in or delete the row"
                )
            if not class_name:
                raise BadInputError(
                    f"item {written!r} has no label", path=path, row=row, hint="fill in the label or delete the row"
                )
            _check_seed_class(class_name, path=path, row=row)
            index = _find_item(pool_index, written, path=path, row=row, place=f"row {row}")
            seeds.append(_Seed(index, class_name, pool_index.uris[index], f"row {row}", path, row))
    return seeds


def _unreadable_seeds(path: Path, error: UnicodeError | csv.Error) -> BadInputError:
    if isinstance(error, UnicodeDecodeError):
        return BadInputError(f"not UTF-8 text ({error.reason})", path=path, hint="save the CSV as UTF-8")
    return BadInputError(f"not a readable CSV file ({error})", path=path, hint="save it as comma-separated values")


def _seeds_from_mapping(labels: Mapping[str | int, str], pool_index: _PoolIndex) -> list[_Seed]:
    seeds = []
    for key, class_name in labels.items():
        place = f"labels[{key!r}]"
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= key < len(pool_index.uris):
                raise BadInputError(
                    f"{place}: pool index {key} is out of range 0..{len(pool_index.uris) - 1}",
                    hint="use a pool index or the item's uri as the key",
                )
            index = int(key)
        elif isinstance(key, str):
            index = _find_item(pool_index, key, place=place)
        else:
            raise BadInputError(f"{place}: a key must be an item's uri or pool index, not {type(key).__name__}")
        if not isinstance(class_name, str) or not class_name.strip():
            raise BadInputError(f"{place}: the label must be a class name, got {class_name!r}")
        check_class_name(class_name.strip(), where=place)
        seeds.append(_Seed(index, class_name.strip(), pool_index.uris[index], place))
    return seeds


def _check_seed_class(class_name: str, *, path: Path, row: int) -> None:
    try:
        check_class_name(class_name)
    except BadInputError as error:
        raise BadInputError(error.problem, path=path, row=row, hint=error.hint) from None


def _find_item(
    pool_index: _PoolIndex, written: str, *, place: str, path: Path | None = None, row: int | None = None
) -> int:
    matches = pool_index.find(written)
    where = "" if row is not None else f"{place}: "
    if not matches:
        raise BadInputError(
            f"{where}item {written!r} is not in the pool",
            path=path,
            row=row,
            hint=f"check its path; pool uris look like {pool_index.uris[0]!r}",
        )
    if len(matches) > 1:
        examples = ", ".join(repr(pool_index.uris[index]) for index in matches[:3])
        raise BadInputError(
            f"{where}item {written!r} matches {len(matches)} pool items ({examples}, ...)",
            path=path,
            row=row,
            hint="write more of its path so that it names one item",
        )
    return matches[0]


def _one_seed_per_item(seeds: list[_Seed], warnings: list[str]) -> list[_Seed]:
    """Drop repeats of the same label; two different labels for one item are an error."""
    first_seed: dict[int, _Seed] = {}
    repeats = 0
    for seed in seeds:
        earlier = first_seed.setdefault(seed.index, seed)
        if earlier is seed:
            continue
        if earlier.class_name != seed.class_name:
            here = "here" if seed.row is not None else f"at {seed.place}"  # the row is already in the message
            raise BadInputError(
                f"item {seed.uri!r} is labeled {seed.class_name!r} {here} "
                f"but {earlier.class_name!r} at {earlier.place}",
                path=seed.path,
                row=seed.row,
                hint="keep one label per item",
            )
        repeats += 1
    if repeats:
        warnings.append(f"{repeats} seed labels repeat an earlier label for the same item; each was kept once")
    return list(first_seed.values())


def _resolve_classes(classes: Sequence[str] | None, default_classes: list[str] | None, seeds: list[_Seed]) -> list[str]:
    if classes is None:
        names = default_classes or sorted({seed.class_name for seed in seeds})
        if not names:
            raise BadInputError(
                "no classes: there are no seed labels to take them from, and classes= was not given",
                hint="pass labels='seed.csv' (columns uri,label) or a dict {uri: class}",
            )
    else:
        if isinstance(classes, str):
            raise BadInputError("classes must be a list of names, not one string", hint="e.g. classes=['cat', 'dog']")
        names = list(classes)
        for position, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise BadInputError(f"classes[{position}] must be a non-empty name, got {name!r}")
            check_class_name(name, where=f"classes[{position}]")
            if name in names[:position]:
                raise BadInputError("this class is listed twice in classes=", cls=name, hint="list each class once")
        for seed in seeds:
            if seed.class_name not in names:
                where = "" if seed.row is not None else f"{seed.place}: "
                raise UnknownLabelError(
                    f"{where}the label of {seed.uri!r} is not one of the given classes",
                    path=seed.path,
                    row=seed.row,
                    cls=seed.class_name,
                    hint=f"known classes: {', '.join(names)}; fix the label or add the class to classes=",
                )
    if len(names) < 2:
        raise BadInputError(
            "the only class; labeling needs at least 2",
            cls=names[0],
            hint="add seed labels for the other classes, or list them all in classes=",
        )
    return names


def _check_every_class_seeded(class_names: list[str], seeds: list[_Seed], *, seed_file: Path | None) -> None:
    seeded = {seed.class_name for seed in seeds}
    empty = [name for name in class_names if name not in seeded]
    if empty:
        others = f" (nor for {', '.join(map(repr, empty[1:]))})" if len(empty) > 1 else ""
        raise EmptyClassError(
            f"no seed label for this class{others}; a few-shot model cannot learn a class it has never seen",
            path=seed_file,
            cls=empty[0],
            hint="label at least one item of each class, or leave the class out of classes=",
        )


def _warn_of_case_variants(class_names: Sequence[str], warnings: list[str]) -> None:
    # "A" beside "a" is more often a typo than two classes: keep both (that is what was written), but say so.
    by_folded: dict[str, list[str]] = {}
    for name in class_names:
        by_folded.setdefault(name.casefold(), []).append(name)
    for variants in by_folded.values():
        if len(variants) > 1:
            warnings.append(f"classes {', '.join(map(repr, variants))} differ only in case and are kept as "
                            "separate classes; if they are one class, write it one way in the seed labels")


def _warn_of_duplicate_content(uris: Sequence[str], hashes: list[str], warnings: list[str]) -> None:
    # Same content under two uris is often a copied file, but may be meant: warn, keep both.
    first_uri: dict[str, str] = {}
    pairs = [(first_uri[h], uri) for uri, h in zip(uris, hashes, strict=True) if first_uri.setdefault(h, uri) != uri]
    if pairs:
        warnings.append(
            f"{len(pairs)} pool items have the same content as an earlier item (e.g. {pairs[0][1]!r} "
            f"repeats {pairs[0][0]!r}); all were kept"
        )


