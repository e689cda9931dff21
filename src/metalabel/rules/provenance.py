"""Where the rules live in a project, and which rules voted for a rule-derived label.

The project keeps a copy of the rules file it was last run with (``PROJECT/rules/``,
artifact kind ``rules``), so later runs and ``metalabel status`` use the same rules.
A round whose model used the rules records, for every label it admitted that a rule
fired on, how each firing rule voted: a JSON file ``PROJECT/rules/votes-round-N.json``
recorded as artifact kind ``rule-votes`` in the transaction that writes the labels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from metalabel.files import write_atomically
from metalabel.rules.files import load_rules
from metalabel.rules.functions import RuleSet, RuleVotes
from metalabel.store import LabelSource, ProjectStore

RULES_ARTIFACT = "rules"
VOTES_ARTIFACT = "rule-votes"


def keep_rules_file(store: ProjectStore, path: str | Path) -> Path:
    """Copy a (checked) rules file into the project and record it; later runs and ``status`` use it."""
    source = Path(path)
    folder = store.folder / "rules"
    folder.mkdir(exist_ok=True)
    kept = folder / source.name
    if source.resolve() != kept.resolve():
        write_atomically(kept, source.read_bytes())
    store.add_artifact(RULES_ARTIFACT, kept, meta={"from": str(source.resolve())})
    return kept


def saved_rules(store: ProjectStore) -> RuleSet | None:
    """The rules file the project was last run with, loaded and checked against its classes; None if none."""
    kept = store.artifacts(kind=RULES_ARTIFACT)
    return load_rules(kept[-1].path, classes=store.classes()) if kept else None


def record_rule_votes(store: ProjectStore, votes: RuleVotes, *, round_id: int, head: str,
                      item_ids: Mapping[int, int]) -> None:
    """Record how the rules voted on the items a round labeled (``item_ids``: pool position -> item id).

    Only items some rule fired on are written; the file is recorded in the caller's transaction.
    """
    fired = votes.fired
    voted = {str(item_id): votes.of_item(int(position)) for position, item_id in item_ids.items()
             if fired[int(position)]}
    folder = store.folder / "rules"
    folder.mkdir(exist_ok=True)
    path = folder / f"votes-round-{round_id}.json"
    write_atomically(path, json.dumps({"head": head, "rules": list(votes.names), "votes": voted}, indent=1))
    store.add_artifact(VOTES_ARTIFACT, path, round_id=round_id,
                       meta={"rules": votes.origin, "fingerprint": votes.fingerprint, "head": head,
                             "labels": len(voted)})


def label_rule_votes(store: ProjectStore, label_ids: Sequence[int] | None = None) -> dict[int, dict[str, str]]:
    """``{label id: {rule: class}}`` for the active model labels whose round used the rules and a rule fired on.

    ``label_ids`` narrows it to those labels.
    """
    by_round: dict[int, dict[str, dict[str, str]]] = {}
    for artifact in store.artifacts(kind=VOTES_ARTIFACT):
        if artifact.round_id is not None and artifact.path.is_file():
            by_round[artifact.round_id] = json.loads(artifact.path.read_text(encoding="utf-8"))["votes"]
    wanted = None if label_ids is None else set(label_ids)
    found = {}
    for label in store.active_labels():
        if LabelSource(label.source) is not LabelSource.MODEL or label.round_id not in by_round:
            continue
        if wanted is not None and label.id not in wanted:
            continue
        cast = by_round[label.round_id].get(str(label.item_id))
        if cast:
            found[label.id] = cast
    return found
