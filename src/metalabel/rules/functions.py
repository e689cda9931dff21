"""Labeling functions: rules that vote for a class or abstain.

A labeling function (LF) is a plain function ``item -> class name or ABSTAIN``; the
helpers here build the common kinds (keywords and regular expressions for text, a
column condition for tables, a pretrained model's confident prediction, a file name
that contains a word). Each helper knows the class it may vote for, so a rule that
names a class the project lacks is refused before any item is read.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.errors import BadInputError

ABSTAIN: Final = None
"""What a labeling function returns when it has nothing to say about an item."""
ABSTAIN_INDEX: Final = -1
"""An abstention in a votes matrix (the other entries are class indices)."""

Reads = Literal["item", "uri"]
Vote = str | None


@dataclass(frozen=True)
class LabelingFunction:
    """A named rule. ``vote_all`` takes the pool and returns one class name or ``ABSTAIN`` per item.

    ``classes`` lists the classes the rule may vote for, where known in advance (every
    helper knows them; a plain function's votes are checked as they are cast).
    ``source`` says where it was defined (a rules file, a line), for error messages.
    """

    name: str
    vote_all: Callable[[LabeledDataset], Sequence[Vote]]
    classes: tuple[str, ...] | None = None
    source: str | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise BadInputError("a labeling function needs a name", path=self.source,
                                hint="give name='...' or define it as a named function")


def labeling_function(function: Callable[[Any], Vote] | None = None, *, name: str | None = None,
                      reads: Reads = "item", classes: Sequence[str] | None = None
                      ) -> Any:
    """Make a labeling function of ``function(item) -> class name or ABSTAIN``; usable as a decorator.

    ``reads="uri"`` passes the item's uri (its file path) instead of its content; for a
    table the item is the row as a ``{column: value}`` dict.
    """
    def wrap(fn: Callable[[Any], Vote]) -> LabelingFunction:
        rule_name = str(name or getattr(fn, "__name__", ""))

        def vote_all(pool: LabeledDataset) -> list[Vote]:
            votes = []
            for value, uri in zip(_inputs(pool, reads), pool.uris):
                try:
                    vote = fn(value)
                except Exception as exc:  # the user's code: name the rule and the item, not a deep traceback
                    raise BadInputError(f"labeling function {rule_name!r} failed on {uri!r}: "
                                        f"{type(exc).__name__}: {exc}",
                                        hint="fix the rule, or return ABSTAIN for items it cannot read") from exc
                votes.append(_checked_vote(vote, rule_name, uri))
            return votes

        return LabelingFunction(rule_name, vote_all, None if classes is None else tuple(classes),
                                description=f"{rule_name}(item)")

    if reads not in ("item", "uri"):
        raise BadInputError(f"reads must be 'item' or 'uri', got {reads!r}")
    return wrap if function is None else wrap(function)


def _inputs(pool: LabeledDataset, reads: Reads) -> Sequence[Any] | np.ndarray:
    if reads == "uri":
        return pool.uris
    if pool.modality == "tabular":
        columns = _column_names(pool)
        return [dict(zip(columns, map(float, row))) for row in np.asarray(pool.items)]
    return pool.items


def _checked_vote(vote: object, rule: str, uri: str) -> Vote:
    if vote is ABSTAIN or isinstance(vote, str):
        return vote
    raise BadInputError(f"labeling function {rule!r} returned {vote!r} for {uri!r}",
                        hint="return a class name, or metalabel.rules.ABSTAIN (None) to abstain")


def keywords(class_name: str, words: Sequence[str], *, name: str | None = None) -> LabelingFunction:
    """Votes ``class_name`` for a text that holds any of ``words`` as a whole word (case-insensitive)."""
    words = [w for w in words if isinstance(w, str) and w.strip()] if isinstance(words, (list, tuple)) else []
    if not words:
        raise BadInputError(f"keyword rule for {class_name!r} needs a non-empty list of words",
                            cls=class_name, hint='e.g. words = ["orbit", "nasa"]')
    pattern = r"\b(?:" + "|".join(re.escape(w.strip().lower()) for w in words) + r")\b"
    return _text_rule(class_name, re.compile(pattern, re.IGNORECASE),
                      name or f"keywords:{class_name}:{words[0].strip()}", f"any of {', '.join(words)}")


def regex(class_name: str, pattern: str, *, name: str | None = None) -> LabelingFunction:
    """Votes ``class_name`` for a text a regular expression finds a match in (case-insensitive)."""
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except (re.error, TypeError) as exc:
        raise BadInputError(f"rule {name or pattern!r}: {pattern!r} is not a regular expression ({exc})",
                            cls=class_name) from exc
    return _text_rule(class_name, compiled, name or f"regex:{class_name}:{pattern}", f"matches /{pattern}/")


def _text_rule(class_name: str, compiled: re.Pattern[str], name: str, description: str) -> LabelingFunction:
    def vote_all(pool: LabeledDataset) -> list[Vote]:
        if pool.modality != "text":
            raise BadInputError(f"rule {name!r} reads text but the pool holds {pool.modality} items",
                                hint="use column rules for tables, filename rules for files")
        return [class_name if compiled.search(text) else ABSTAIN for text in pool.items]

    return LabelingFunction(name, vote_all, (class_name,), description=description)


_COMPARISONS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


def column(class_name: str, name_of_column: str, comparison: str, value: float, *,
           name: str | None = None) -> LabelingFunction:
    """Votes ``class_name`` for a table row whose ``name_of_column`` compares to ``value`` (e.g. ``">", 2.5``)."""
    compare = _COMPARISONS.get(comparison)
    if compare is None:
        raise BadInputError(f"rule on column {name_of_column!r}: unknown comparison {comparison!r}",
                            cls=class_name, hint=f"use one of {' '.join(_COMPARISONS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInputError(f"rule on column {name_of_column!r}: the threshold must be a finite number, "
                            f"got {value!r}", cls=class_name)
    rule_name = name or f"column:{class_name}:{name_of_column}{comparison}{value:g}"

    def vote_all(pool: LabeledDataset) -> list[Vote]:
        if pool.modality != "tabular":
            raise BadInputError(f"rule {rule_name!r} reads a table column but the pool holds {pool.modality} items")
        columns = _column_names(pool)
        if name_of_column not in columns:
            raise BadInputError(f"rule {rule_name!r}: the pool has no column {name_of_column!r}", cls=class_name,
                                hint=f"columns: {', '.join(columns)}")
        values = np.asarray(pool.items, dtype=np.float64)[:, columns.index(name_of_column)]
        return [class_name if hit else ABSTAIN for hit in compare(values, value)]

    return LabelingFunction(rule_name, vote_all, (class_name,),
                            description=f"{name_of_column} {comparison} {value:g}")


def _column_names(pool: LabeledDataset) -> list[str]:
    width = np.asarray(pool.items).shape[1]
    return list(pool.feature_names) if pool.feature_names else [f"#{i}" for i in range(width)]


def filename_contains(class_name: str, text: str, *, name: str | None = None) -> LabelingFunction:
    """Votes ``class_name`` for an item whose file name (the uri's last part) contains ``text`` (case-insensitive)."""
    if not isinstance(text, str) or not text:
        raise BadInputError("a filename rule needs the text to look for", cls=class_name)
    needle = text.lower()

    def vote_all(pool: LabeledDataset) -> list[Vote]:
        return [class_name if needle in uri.replace("\\", "/").rsplit("/", 1)[-1].lower() else ABSTAIN
                for uri in pool.uris]

    return LabelingFunction(name or f"filename:{class_name}:{text}", vote_all, (class_name,),
                            description=f"file name contains {text!r}")


def model_prediction(name: str, predict_proba: Callable[[Any], np.ndarray], classes: Sequence[str], *,
                     min_confidence: float = 0.0, batch_size: int = 256) -> LabelingFunction:
    """Votes a pretrained model's predicted class where its probability is at least ``min_confidence``.

    ``predict_proba`` maps a batch of items to probabilities ``[n, len(classes)]`` over
    ``classes`` (the model's own class names, which must be project classes).
    """
    classes = tuple(classes)
    if not 0 <= min_confidence <= 1:
        raise BadInputError(f"rule {name!r}: min_confidence must lie in [0, 1], got {min_confidence!r}")

    def vote_all(pool: LabeledDataset) -> list[Vote]:
        votes: list[Vote] = []
        for start in range(0, len(pool), batch_size):
            probs = np.asarray(predict_proba(pool.items[start:start + batch_size]), dtype=np.float64)
            if probs.ndim != 2 or probs.shape[1] != len(classes):
                raise BadInputError(f"rule {name!r}: the model returned probabilities of shape {probs.shape}",
                                    hint=f"expected [batch, {len(classes)}], one column per listed class")
            best = probs.argmax(1)
            votes += [classes[c] if probs[i, c] >= min_confidence else ABSTAIN for i, c in enumerate(best)]
        return votes

    return LabelingFunction(name, vote_all, classes, description=f"model prediction >= {min_confidence:g}")


@dataclass(frozen=True)
class RuleSet:
    """Labeling functions with unique names, and where they came from (a file's sha256, or ``"python"``)."""

    functions: tuple[LabelingFunction, ...]
    origin: str = "python"
    fingerprint: str = ""

    @classmethod
    def of(cls, functions: Sequence[LabelingFunction], *, origin: str = "python") -> RuleSet:
        functions = tuple(functions)
        if not functions:
            raise BadInputError("no labeling functions were given", path=None if origin == "python" else origin,
                                hint="define at least one rule")
        seen: set[str] = set()
        for function in functions:
            if not isinstance(function, LabelingFunction):
                raise BadInputError(f"{function!r} is not a labeling function",
                                    hint="wrap it with metalabel.rules.labeling_function")
            if function.name in seen:
                raise BadInputError(f"two rules are named {function.name!r}", path=function.source,
                                    hint="give each rule its own name")
            seen.add(function.name)
        digest = hashlib.sha256("\n".join(f.name + "\t" + f.description for f in functions).encode())
        return cls(functions, origin, digest.hexdigest()[:16])

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    def check_classes(self, classes: Sequence[str]) -> None:
        """Refuse a rule that declares a class the project does not have (before any item is read)."""
        known = set(classes)
        for function in self.functions:
            for class_name in function.classes or ():
                if class_name not in known:
                    raise _unknown_class(function, class_name, classes)

    def votes(self, pool: LabeledDataset, classes: Sequence[str]) -> RuleVotes:
        """Every rule applied to every pool item: a ``RuleVotes`` (class indices, ``ABSTAIN_INDEX``)."""
        self.check_classes(classes)
        index = {name: c for c, name in enumerate(classes)}
        matrix = np.full((len(pool), len(self.functions)), ABSTAIN_INDEX, dtype=np.int64)
        for j, function in enumerate(self.functions):
            try:
                cast = function.vote_all(pool)
            except BadInputError as exc:
                if exc.path is not None or function.source is None:
                    raise
                raise BadInputError(exc.problem, path=function.source, cls=exc.cls, hint=exc.hint) from exc
            if len(cast) != len(pool):
                raise BadInputError(f"rule {function.name!r} gave {len(cast)} votes for {len(pool)} items",
                                    path=function.source)
            for i, vote in enumerate(cast):
                if vote is ABSTAIN:
                    continue
                if vote not in index:
                    raise _unknown_class(function, str(vote), classes, uri=pool.uris[i])
                matrix[i, j] = index[vote]
        return RuleVotes(tuple(self.names), matrix, list(classes), self.fingerprint, self.origin)


def _unknown_class(function: LabelingFunction, class_name: str, classes: Sequence[str],
                   uri: str | None = None) -> BadInputError:
    on = f" (for {uri!r})" if uri else ""
    return BadInputError(f"rule {function.name!r} votes for a class the project does not have{on}",
                         path=function.source, cls=class_name,
                         hint=f"the project's classes: {', '.join(classes)}; fix the rule or the class name")


@dataclass(frozen=True, eq=False)
class RuleVotes:
    """The rules' votes on a pool: ``matrix[i, j]`` is rule j's class index for item i, or ``ABSTAIN_INDEX``."""

    names: tuple[str, ...]
    matrix: np.ndarray  # [N, m] int64
    classes: list[str]
    fingerprint: str
    origin: str

    @property
    def fired(self) -> np.ndarray:
        """[N] bool: at least one rule voted."""
        return (self.matrix != ABSTAIN_INDEX).any(1)

    def of_item(self, position: int) -> dict[str, str]:
        """The votes cast on one pool item: ``{rule: class}`` (abstentions left out)."""
        row = self.matrix[position]
        return {self.names[j]: self.classes[int(c)] for j, c in enumerate(row) if c != ABSTAIN_INDEX}
