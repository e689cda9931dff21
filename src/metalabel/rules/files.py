"""Rules files: ``rules.py`` defining labeling functions, or a TOML file of keyword, regex, column and filename rules.

TOML, one table array per kind (``name`` is optional in each)::

    [[keywords]]
    class = "sci.space"
    words = ["orbit", "nasa", "shuttle"]

    [[regex]]
    class = "comp.graphics"
    pattern = "\\\\b(jpe?g|gif|tiff?)\\\\b"

    [[column]]
    class = "setosa"
    column = "petal length (cm)"
    below = 2.5          # or: above = 4.8

    [[filename]]
    class = "cat"
    contains = "cat"

A ``rules.py`` file is run as a module; every module-level ``LabelingFunction`` (made
by a helper or the ``@labeling_function`` decorator) is a rule, in definition order.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metalabel.errors import BadInputError, DataNotFoundError
from metalabel.rules.functions import (
    LabelingFunction,
    RuleSet,
    column,
    filename_contains,
    keywords,
    regex,
)
from metalabel.store.hashing import path_sha256


def load_rules(path: str | Path, *, classes: Sequence[str] | None = None) -> RuleSet:
    """The rules in ``path`` (``.py`` or ``.toml``); with ``classes``, a rule naming another class is refused."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("no rules file here", path=path, hint="give a rules.py or a .toml file")
    if path.suffix == ".toml":
        functions = _toml_rules(path)
    elif path.suffix == ".py":
        functions = _python_rules(path)
    else:
        raise BadInputError("a rules file is a .py or a .toml file", path=path)
    functions = [_with_source(f, path) for f in functions]
    rules = RuleSet.of(functions, origin=str(path))
    rules = RuleSet(rules.functions, rules.origin, path_sha256(path)[:16])
    if classes is not None:
        rules.check_classes(classes)
    return rules


def _with_source(function: LabelingFunction, path: Path) -> LabelingFunction:
    return function if function.source else LabelingFunction(function.name, function.vote_all, function.classes,
                                                             str(path), function.description)


_KINDS: dict[str, tuple[tuple[str, ...], Callable[..., LabelingFunction]]] = {
    "keywords": (("words",), lambda cls, entry, name: keywords(cls, entry["words"], name=name)),
    "regex": (("pattern",), lambda cls, entry, name: regex(cls, entry["pattern"], name=name)),
    "column": (("column",), lambda cls, entry, name: _column_rule(cls, entry, name)),
    "filename": (("contains",), lambda cls, entry, name: filename_contains(cls, entry["contains"], name=name)),
}


def _toml_rules(path: Path) -> list[LabelingFunction]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"not a valid TOML file ({exc})", path=path) from exc
    functions = []
    for kind, entries in document.items():
        if kind not in _KINDS:
            raise BadInputError(f"unknown rule kind [[{kind}]]", path=path,
                                hint=f"use {', '.join(f'[[{k}]]' for k in _KINDS)}")
        if not isinstance(entries, list):
            raise BadInputError(f"[{kind}] must be a list of rules: write [[{kind}]]", path=path)
        needed, make = _KINDS[kind]
        for number, entry in enumerate(entries, start=1):
            where = f"[[{kind}]] #{number}"
            name = entry.get("name")
            class_name = entry.get("class")
            if not isinstance(class_name, str) or not class_name:
                raise BadInputError(f"rule {name or where} has no class", path=path,
                                    hint='add class = "..." (the class it votes for)')
            missing = [key for key in needed if key not in entry]
            if missing:
                raise BadInputError(f"rule {name or where} lacks {', '.join(missing)}", path=path, cls=class_name)
            try:
                functions.append(make(class_name, entry, name if isinstance(name, str) else None))
            except BadInputError as exc:
                raise BadInputError(f"rule {name or where}: {exc.problem}", path=path, cls=class_name,
                                    hint=exc.hint) from exc
    return functions


def _column_rule(class_name: str, entry: dict[str, Any], name: str | None) -> LabelingFunction:
    bounds = [(key, entry[key]) for key in ("below", "above") if key in entry]
    if len(bounds) != 1:
        raise BadInputError("a column rule needs one of below = ... or above = ...", cls=class_name)
    key, value = bounds[0]
    return column(class_name, entry["column"], "<" if key == "below" else ">", value, name=name)


def _python_rules(path: Path) -> list[LabelingFunction]:
    # a fresh module name each load: re-reading an edited file never returns the old module
    module_name = f"metalabel_rules_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BadInputError("cannot be loaded as a Python module", path=path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BadInputError as exc:
        raise BadInputError(exc.problem, path=path, cls=exc.cls, hint=exc.hint) from exc
    except Exception as exc:  # the user's code: any error it raises is reported against the file
        line = _line_in(exc, path)
        at = f" (line {line})" if line else ""
        raise BadInputError(f"running the rules file failed{at}: {type(exc).__name__}: {exc}", path=path,
                            hint="fix the file; it must define labeling functions") from exc
    finally:
        sys.modules.pop(module_name, None)
    functions = [value for value in vars(module).values() if isinstance(value, LabelingFunction)]
    if not functions:
        raise BadInputError("defines no labeling functions", path=path,
                            hint="decorate a function with @metalabel.rules.labeling_function, "
                                 "or use metalabel.rules.keywords(...)")
    return functions


def _line_in(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` where ``exc`` was raised (the innermost), if it was raised there."""
    import traceback

    if isinstance(exc, SyntaxError):
        return exc.lineno
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == str(path)]
    return lines[-1] if lines else None
