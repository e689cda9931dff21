"""One self-contained HTML page from a ``ReportData``: inline CSS, PNGs as data URIs, no scripts.

Everything that came from the user (class names, URIs, texts, feedback lines,
scorecard cells) passes through ``html.escape`` before it reaches the page.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from metalabel.errors import BadInputError
from metalabel.files import write_atomically
from metalabel.report import figures
from metalabel.report.data import LabelIssue, ReportData, RetractedLabel, RoundPoint, Sample

SECTIONS = (
    ("scorecard", "Scorecard"),
    ("rounds", "Round by round"),
    ("log", "Round log"),
    ("reliability", "Calibration"),
    ("confusion", "Confusion matrix"),
    ("samples", "Samples per class"),
    ("retracted", "Retracted labels"),
    ("generated", "Generated beside real"),
    ("similarity", "Generated data: similarity and downstream use"),
    ("label_issues", "Label issues"),
)
"""Section id and heading, in page order (after the header)."""

_WHY_MISSING = {
    "scorecard": "the set has not been evaluated; each round of metalabel run scores it",
    "rounds": "no labeling round has run; start one with metalabel run",
    "log": "no labeling round has run",
    "reliability": "calibration needs held-out human labels to compare confidence with",
    "confusion": "needs reference labels (gold or held-out human labels) to compare metalabel's labels with",
    "samples": "no item has a label yet",
    "retracted": "no model label has been retracted; a round retracts what its certificate no longer covers",
    "generated": "no generated or augmented items; generation adds data where a class is thin",
    "similarity": "no generator has been compared with the real data",
    "downstream": "downstream accuracy needs a held-out test set",
    "label_issues": "no label-issue search has run",
}

_COUNT_NAMES = {
    "items": "pool items",
    "labeled": "labeled",
    "human": "human labels",
    "imported": "imported labels",
    "model": "model labels",
    "generated": "generated items",
    "augmented": "augmented items",
    "open_questions": "open questions",
    "disagreements": "disagreements",
    "retracted": "retracted labels",
}

_TEXT_SNIPPET = 320  # characters of a text item shown in a table cell


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


RETRACTED_SHOWN = 200  # rows of the retracted-labels table; the export lists them all


def _certified(point: RoundPoint) -> str:
    """The round's certified bound as '>= 95.0% (delta 0.05)', or what it would take (plain text)."""
    # the scorecard's wording, so the report, the scorecard and `metalabel status` say it alike; imported
    # here because metalabel.evaluate loads scikit-learn and torch, which importing the report should not
    from metalabel.evaluate.scorecard import at_least, not_certified

    if point.certified_precision is not None:
        return at_least(point.certified_precision, point.delta)
    if point.before_certification:
        return "not certified (the round ran before certified acceptance)"
    return not_certified(point.reference_needed)


def _ci(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" ({100 * interval[0]:.1f}–{100 * interval[1]:.1f}%)"


def _snippet(text: str | None) -> str:
    if not text:
        return '<span class="muted">no text</span>'
    text = " ".join(text.split())
    return _e(text if len(text) <= _TEXT_SNIPPET else text[: _TEXT_SNIPPET - 1] + "…")


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_img(png: bytes, alt: str) -> str:
    return f'<img class="figure" src="{_data_uri(png)}" alt="{_e(alt)}">'


def _thumb(image: np.ndarray | None, alt: str, *, side: int = 84) -> str:
    if image is None:
        return f'<span class="noimg" style="width:{side}px;height:{side}px">no image</span>'
    # tiny images (28x28 characters) are blown up with hard pixels instead of blur
    pixelated = " pixelated" if max(image.shape[:2]) <= 64 else ""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    return (f'<img class="thumb{pixelated}" src="{_data_uri(figures.image_png(image))}" '
            f'width="{round(width * scale)}" height="{round(height * scale)}" alt="{_e(alt)}" title="{_e(alt)}">')


def _tag(source: str) -> str:
    return f'<span class="tag tag-{_e(source)}">{_e(source)}</span>'


def _missing(data: ReportData, key: str) -> str:
    return f'<p class="missing">Not measured yet: {_e(data.why_missing.get(key, _WHY_MISSING[key]))}.</p>'


def _notes(data: ReportData, key: str) -> str:
    return "".join(f'<p class="note">{_e(line)}</p>' for line in data.notes.get(key, ()))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, css: str = "") -> str:
    """Rows are HTML already (cells escaped by the caller)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _rounds_in_order(data: ReportData) -> list[RoundPoint]:
    return sorted(data.rounds, key=lambda r: r.round_id)


def _by_class(data: ReportData, samples: Sequence[Sample]) -> list[tuple[str, list[Sample]]]:
    groups: dict[str, list[Sample]] = {name: [] for name in data.classes}
    for sample in samples:
        groups.setdefault(sample.class_name, []).append(sample)
    return [(name, members) for name, members in groups.items() if members]


# -- header -------------------------------------------------------------------------------------------


def _labeled_count(data: ReportData, last: RoundPoint | None) -> int:
    if "labeled" in data.counts:
        return int(data.counts["labeled"])
    real_sources = [data.counts[s] for s in ("human", "imported", "model") if s in data.counts]
    if real_sources:
        return int(sum(real_sources))
    return 0 if last is None else last.human_labels + last.model_labels


def verdict(data: ReportData) -> str:
    """The report in one plain-language paragraph (plain text, not HTML)."""
    rounds = _rounds_in_order(data)
    last = rounds[-1] if rounds else None
    labeled = _labeled_count(data, last)
    items = data.counts.get("items")
    first = f"{labeled:,} of {items:,} items labeled ({labeled / items:.0%})" if items else f"{labeled:,} items labeled"
    if last is not None:
        first += f" after {_plural(len(rounds), 'round')}"
    human = data.counts.get("human", None if last is None else last.human_labels)
    model = data.counts.get("model", None if last is None else last.model_labels)
    who = [f"{n:,} by {by}" for n, by in ((human, "people"), (data.counts.get("imported"), "import"),
                                          (model, "the model")) if n]
    sentences = [first + (": " + ", ".join(who) if who else "") + "."]

    # where a later round ended early after it accepted, the labels counted are its: the last finished round's
    # certificate, reference answers and gold figures describe labels no longer active
    described = last if data.ended_early is None else None
    if data.ended_early is not None:
        sentences.append(data.ended_early)
    elif last is not None and last.before_certification:
        sentences.append("The last round ran before certified acceptance, so no precision is certified; "
                         "run another round to certify it.")
    elif last is not None:
        from metalabel.evaluate.scorecard import precision_summary  # see _certified

        sentences.append(precision_summary(
            certified_precision=last.certified_precision, delta=last.delta,
            estimated_precision=last.estimated_precision, coverage=last.coverage,
            reference_answers=last.reference_answers, reference_needed=last.reference_needed,
            target=data.target_precision))
    if described is not None and described.reference_in_accepted is not None:
        sentences.append(f"Of the {described.reference_in_accepted_count:,} reference answers in the accepted region, "
                         f"the model had {_pct(described.reference_in_accepted)} right"
                         f"{_ci(described.reference_in_accepted_ci)}.")
    if described is not None and (described.gold_label_accuracy is not None
                                  or described.achieved_precision is not None):
        parts = []
        if described.achieved_precision is not None:
            parts.append(f"the accepted model labels are {_pct(described.achieved_precision)} precise")
        if described.gold_label_accuracy is not None:
            parts.append(f"all labels {_pct(described.gold_label_accuracy)} right")
        sentences.append("Against gold labels " + " and ".join(parts) + ".")
    retracted = data.counts.get("retracted", sum(r.retracted for r in rounds))
    if retracted:
        sentences.append(f"{_plural(int(retracted), 'model label')} retracted so far, when a round's certificate "
                         "no longer covered them (see Retracted labels).")
    downstream = data.downstream
    if downstream is not None:
        text = f"A classifier trained on the set scores {_pct(downstream.real_only)}"
        if downstream.test:
            text += f" on {downstream.test}"
        text += f"; with generated data {_pct(downstream.with_generated)} ({100 * downstream.gain:+.1f} pts)"
        sentences.append(text + ".")
    waiting = []
    if data.counts.get("open_questions"):
        waiting.append(_plural(data.counts["open_questions"], "question") + " to answer")
    if data.counts.get("disagreements"):
        waiting.append(_plural(data.counts["disagreements"], "model label") + " contradicting a person")
    if data.label_issues:
        waiting.append(_plural(len(data.label_issues), "label") + " that look wrong (see Label issues)")
    if waiting:
        joined = "; ".join(waiting)
        sentences.append(joined[0].upper() + joined[1:] + ".")
    return " ".join(sentences)


def _header(data: ReportData) -> str:
    known = [key for key in _COUNT_NAMES if key in data.counts]
    other = [key for key in data.counts if key not in _COUNT_NAMES]
    tiles = "".join(
        f'<div class="tile"><div class="tile-value">{int(data.counts[key]):,}</div>'
        f'<div class="tile-name">{_e(_COUNT_NAMES.get(key, key.replace("_", " ")))}</div></div>'
        for key in known + other
    )
    chips = "".join(f'<span class="chip">{_e(name)}</span>' for name in data.classes)
    classes = (f'<details><summary>{len(data.classes)} classes</summary><div class="chips">{chips}</div></details>'
               if len(data.classes) > 24 else f'<div class="chips">{chips}</div>')
    nav = " · ".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in SECTIONS)
    return (
        f'<header><p class="kicker">metalabel report</p><h1>{_e(data.project)}</h1>'
        f'<p class="meta">pool <b>{_e(data.pool)}</b> · {_e(data.modality)} · {len(data.classes)} classes'
        f' · {_e(data.created)}</p>'
        f'<p class="verdict">{_e(verdict(data))}</p>'
        f'<div class="tiles">{tiles}</div>{classes}<nav>{nav}</nav></header>'
    )


# -- sections -----------------------------------------------------------------------------------------


def _scorecard(data: ReportData) -> str:
    if not data.scorecard:
        return _missing(data, "scorecard")
    rows = []
    rows_left = 0
    for index, row in enumerate(data.scorecard):
        cells = (f'<td>{_e(row.metric)}</td><td class="num">{_e(row.value)}</td>'
                 f'<td class="detail">{_e(row.detail)}</td>')
        if rows_left == 0:  # one section cell spans its run of rows
            rows_left = 1
            while index + rows_left < len(data.scorecard) and data.scorecard[index + rows_left].section == row.section:
                rows_left += 1
            cells = f'<th scope="rowgroup" rowspan="{rows_left}">{_e(row.section)}</th>' + cells
            rows.append(f'<tr class="group-start">{cells}</tr>')
        else:
            rows.append(f"<tr>{cells}</tr>")
        rows_left -= 1
    head = "<tr><th>Section</th><th>Metric</th><th>Value</th><th>Detail</th></tr>"
    return f'<table class="scorecard"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _rounds(data: ReportData) -> str:
    if not data.rounds:
        return _missing(data, "rounds")
    png = figures.rounds_png(data.rounds, target_precision=data.target_precision)
    explained = []  # say only what the precision panel actually draws
    if any(r.certified_precision is not None for r in data.rounds):
        explained.append("the solid line is the certified lower bound, which holds with probability 1 - delta "
                         "over the random reference sample; the dashed line is the point estimate, no guarantee; "
                         "a round with no certificate is left blank")
    if any(r.reference_in_accepted is not None for r in data.rounds):
        explained.append("squares are the reference answers in the accepted region, with their 95% intervals")
    if any(r.gold_label_accuracy is not None or r.achieved_precision is not None for r in data.rounds):
        explained.append("purple lines are measured against gold labels")
    caption = f'<p class="caption">Precision: {"; ".join(explained)}.</p>' if explained else ""
    return (_figure_img(png, "labels by source, precision, coverage and accuracy per round") + caption
            + _rounds_table(data))


def _rounds_table(data: ReportData) -> str:
    """Per round: the certificate and the evidence behind it, in numbers."""
    rounds = _rounds_in_order(data)
    gold = any(r.achieved_precision is not None for r in rounds)
    headers = ["Round", "Certified precision", "Point estimate", "Coverage", "Threshold", "Reference answers",
               "Reference in accepted region", "Model labels", "Retracted"] + (["Achieved (gold)"] if gold else [])
    rows = []
    for point in rounds:
        reference = "–"
        if point.reference_in_accepted is not None:
            reference = (f"{_pct(point.reference_in_accepted)} of {point.reference_in_accepted_count:,}"
                         f"{_ci(point.reference_in_accepted_ci)}")
        row = [str(point.round_id), _certified(point), _pct(point.estimated_precision), _pct(point.coverage),
               "–" if point.threshold is None else f"{point.threshold:.3f}", f"{point.reference_answers:,}",
               reference, f"{point.model_labels:,}", f"{point.retracted:,}"]
        if gold:
            row.append(_pct(point.achieved_precision))
        rows.append([_e(cell) for cell in row])
    return (_table(headers, rows, css="numeric rounds")
            + '<p class="caption">Certified precision: the lower bound on the precision of every model label the '
              "export writes, with the chance delta that it fails; where nothing is certified no model label is "
              "accepted, and the cell says how many more reference answers would certify the target.</p>")


def _round_summary(point: RoundPoint) -> str:
    parts = [f"{point.human_labels:,} human ({point.reference_answers:,} reference)",
             f"{point.model_labels:,} model labels"]
    if point.generated_items or point.augmented_items:
        parts.append(f"{point.generated_items + point.augmented_items:,} generated/augmented items")
    parts.append(f"coverage {_pct(point.coverage)}")
    parts.append(f"certified precision {_certified(point)}")
    if point.estimated_precision is not None:
        parts.append(f"point estimate {_pct(point.estimated_precision)}")
    if point.retracted:
        parts.append(f"{point.retracted:,} retracted")
    if point.achieved_precision is not None:
        parts.append(f"achieved precision {_pct(point.achieved_precision)} (gold)")
    if point.held_out_accuracy is not None:
        parts.append(f"held-out accuracy {_pct(point.held_out_accuracy)}")
    return " · ".join(_e(part) for part in parts)


def _log(data: ReportData) -> str:
    if not data.rounds:
        return _missing(data, "log")
    entries = []
    for point in _rounds_in_order(data):
        model = f' <span class="muted">{_e(point.model)}</span>' if point.model else ""
        changes = ("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in point.feedback) + "</ul>"
                   if point.feedback else '<p class="muted">No setting changed after this round.</p>')
        entries.append(f'<div class="round"><h3>Round {point.round_id}{model}</h3>'
                       f'<p class="round-summary">{_round_summary(point)}</p>{changes}</div>')
    return "".join(entries)


def _reliability(data: ReportData) -> str:
    if data.reliability is None or not any(data.reliability.count):
        return _missing(data, "reliability")
    return (_figure_img(figures.reliability_png(data.reliability, ece=data.ece), "reliability diagram")
            + '<p class="caption">Each point is a bin of labels by confidence: on the dashed diagonal, '
              "a confidence of 90% means 90% of those labels are right. Below: labels per bin.</p>")


def _confusion(data: ReportData) -> str:
    if data.confusion is None or not np.asarray(data.confusion.matrix).sum():
        return _missing(data, "confusion")
    classes = list(data.confusion.classes)
    renamed = [(label, name) for label, name in zip(figures.plot_labels(classes), classes) if label != name]
    key = ""
    if renamed:
        key = ('<p class="caption">The plot leaves out characters its font cannot draw: '
               + "; ".join(f"{_e(label)} = {_e(name)}" for label, name in renamed) + ".</p>")
    against = data.confusion.against
    narrow = ' class="narrow"' if len(classes) <= 10 else ""  # many classes need the full width
    return (f'<div{narrow}>{_figure_img(figures.confusion_png(data.confusion), "confusion matrix")}</div>'
            f'<p class="caption">Rows: {_e(against)}; columns: the label metalabel gave. Numbers are counts; '
            f"colour is the share of the row, so a dark diagonal is good.</p>{key}")


def _provenance(sample: Sample) -> str:
    parts = [_tag(sample.source)]
    if sample.confidence is not None:
        parts.append(f"{sample.confidence:.2f}")
    if sample.round_id is not None:
        parts.append(f"r{sample.round_id}")
    return " ".join(parts)


def _samples(data: ReportData) -> str:
    groups = _by_class(data, data.samples)
    if not groups:
        return _missing(data, "samples")
    if data.modality == "image":
        rows = []
        for name, members in groups:
            cards = "".join(
                f'<figure class="item">{_thumb(s.image, s.uri)}<figcaption>{_provenance(s)}</figcaption></figure>'
                for s in members
            )
            rows.append(f'<div class="class-row"><div class="class-name">{_e(name)}</div>'
                        f'<div class="cards">{cards}</div></div>')
        return ('<p class="caption">Label source, calibrated confidence and the round that admitted the label; '
                "hover for the item's URI.</p>" + "".join(rows))
    table_rows = [
        [f'<b>{_e(name)}</b>' if i == 0 else "", _provenance(s), f'<span title="{_e(s.uri)}">{_snippet(s.text)}</span>']
        for name, members in groups for i, s in enumerate(members)
    ]
    return _table(["Class", "Label", "Text"], table_rows, css="samples-text")


def _retracted_item(data: ReportData, label: RetractedLabel) -> str:
    if data.modality == "image" and label.image is not None:
        thumb = _thumb(label.image, label.uri, side=40)
        return f'<div class="issue-item">{thumb}<div class="uri">{_e(label.uri)}</div></div>'
    snippet = f"{_snippet(label.text)}" if label.text else ""
    return f'{snippet}<div class="uri">{_e(label.uri)}</div>'


def _retracted(data: ReportData) -> str:
    if not data.retracted:
        return _missing(data, "retracted")
    shown = data.retracted[:RETRACTED_SHOWN]
    rows = [[_retracted_item(data, label), _e(label.class_name),
             _e("–" if label.round_id is None else label.round_id),
             _e(_pct(label.confidence)), _e("–" if label.retracted_round is None else label.retracted_round),
             _e(label.reason)]
            for label in shown]
    total = max(int(data.counts.get("retracted", 0)), len(data.retracted))
    more = (f" Showing the latest {len(shown):,} of {total:,}; <code>metalabel export PROJECT --format csv "
            "--include-retracted</code> lists them all." if total > len(shown) else "")
    return ('<p class="caption">Model labels a later round took back because its certificate no longer covered '
            "them. They are not exported (unless asked for, marked retracted) and not counted as labels."
            f"{more}</p>"
            + _table(["Item", "Class", "Admitted in round", "Confidence then", "Retracted in round", "Why"], rows,
                     css="issues retracted"))


def _generated_caption(sample: Sample) -> str:
    made_by = _e(sample.generator) if sample.generator else "unknown generator"
    round_text = f" · r{sample.round_id}" if sample.round_id is not None else ""
    return f"{_tag(sample.source)} {made_by}<br>{_e(sample.class_name)}{round_text}"


def _generated(data: ReportData) -> str:
    if not data.generated:
        return _missing(data, "generated")
    if data.modality == "image":
        cards = []
        for sample in data.generated:
            parents = "".join(_thumb(data.parent_images.get(uri), uri, side=72) for uri in sample.parents)
            pair = f'{parents}<span class="arrow">→</span>' if parents else ""
            made = _thumb(sample.image, sample.uri, side=72)
            cards.append(f'<figure class="pair"><div class="pair-images">{pair}{made}'
                         f"</div><figcaption>{_generated_caption(sample)}</figcaption></figure>")
        return ('<p class="caption">Each generated item to the right of the real item(s) it was made from.</p>'
                f'<div class="cards">{"".join(cards)}</div>')
    rows = [
        [_generated_caption(s),
         "<br>".join(_snippet(data.parent_texts.get(uri)) for uri in s.parents) or '<span class="muted">none</span>',
         _snippet(s.text)]
        for s in data.generated
    ]
    return _table(["Made by", "From", "Generated"], rows, css="samples-text")


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}g}"


def _similarity(data: ReportData) -> str:
    parts = []
    if data.similarity:
        rows = [
            [_e(name), _e(f"{s.real:,}"), _e(f"{s.generated:,}"), _e(_number(s.mmd)), _e(_number(s.frechet)),
             _e(_pct(s.precision)), _e(_pct(s.recall))]
            for name, s in sorted(data.similarity.items())
        ]
        parts.append(_table(["Generator", "Real items", "Generated items", "MMD ↓", "Fréchet ↓", "Precision ↑",
                             "Recall ↑"], rows, css="numeric"))
        parts.append('<p class="caption">MMD and Fréchet distance: lower means closer to the real data. '
                     "Precision: share of generated items that fall where real ones do (fidelity); "
                     "recall: share of the real data's variety the generator reaches (diversity).</p>")
    else:
        parts.append(_missing(data, "similarity"))
    parts.append("<h3>Downstream use</h3>")
    downstream = data.downstream
    if downstream is not None:
        rows = [["Trained on the labeled set", _e(_pct(downstream.real_only))],
                ["Trained on the set plus generated data",
                 _e(f"{_pct(downstream.with_generated)} ({100 * downstream.gain:+.1f} pts)")],
                ["Trained on generated only, tested on real (TSTR)", _e(_pct(downstream.tstr))]]
        parts.append(_table(["Classifier", "Accuracy"], rows, css="numeric"))
        parts.append(f'<p class="caption">Accuracy on {_e(downstream.test or "held-out test set")}'
                     f" ({downstream.test_size:,} items).</p>")
    else:
        parts.append(_missing(data, "downstream"))
    return "".join(parts)


def _issue_item(data: ReportData, issue: LabelIssue) -> str:
    if data.modality == "image":
        thumb = _thumb(issue.image, issue.uri, side=56)
        return f'<div class="issue-item">{thumb}<div class="uri">{_e(issue.uri)}</div></div>'
    return f'{_snippet(issue.text)}<div class="uri">{_e(issue.uri)}</div>'


def _label_issues(data: ReportData) -> str:
    if not data.label_issues:
        return _missing(data, "label_issues")
    issues = sorted(data.label_issues, key=lambda issue: issue.self_confidence)  # likeliest wrong first
    rows = [[_issue_item(data, issue), _e(issue.given), _e(issue.suggested), _e(f"{issue.self_confidence:.2f}")]
            for issue in issues]
    return ('<p class="caption">Labels the evidence disagrees with, likeliest wrong first. Self-confidence is '
            "the model's probability for the given label.</p>"
            + _table(["Item", "Given", "Suggested", "Self-confidence"], rows, css="issues"))


_RENDERERS = {
    "scorecard": _scorecard,
    "rounds": _rounds,
    "log": _log,
    "reliability": _reliability,
    "confusion": _confusion,
    "samples": _samples,
    "retracted": _retracted,
    "generated": _generated,
    "similarity": _similarity,
    "label_issues": _label_issues,
}

_CSS = """
:root { --ink: #24292f; --muted: #6e7781; --line: #d8dee4; --soft: #f6f8fa; --accent: #3b6ea8; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 32px 24px 64px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 16px; }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .08em; font-size: 12px; }
h1 { margin: 2px 0 4px; font-size: 30px; font-weight: 650; word-break: break-word; }
h2 { margin: 40px 0 12px; font-size: 21px; font-weight: 620; padding-bottom: 6px;
     border-bottom: 1px solid var(--line); }
h3 { margin: 20px 0 6px; font-size: 16px; font-weight: 620; }
.meta { margin: 0 0 12px; color: var(--muted); }
.verdict { font-size: 17px; line-height: 1.55; background: var(--soft); border-left: 4px solid var(--accent);
  padding: 12px 16px; margin: 12px 0 16px; border-radius: 0 6px 6px 0; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 14px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 112px; }
.tile-value { font-size: 21px; font-weight: 620; font-variant-numeric: tabular-nums; }
.tile-name { color: var(--muted); font-size: 12.5px; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; margin: 6px 0; }
.chip { background: var(--soft); border: 1px solid var(--line); border-radius: 12px; padding: 1px 10px;
        font-size: 13px; }
summary { cursor: pointer; color: var(--muted); }
nav { margin-top: 14px; font-size: 13.5px; color: var(--muted); }
nav a { color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-weight: 600; font-size: 13px; color: #444; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
table.numeric td:not(:first-child), td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.scorecard th[scope] { background: #fff; font-weight: 600; width: 16%; }
table.scorecard tr.group-start > * { border-top: 2px solid var(--line); }
td.detail { color: var(--muted); }
img.figure { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.narrow { max-width: 720px; }
.caption { color: var(--muted); font-size: 13.5px; margin: 4px 0 12px; }
.missing { color: var(--muted); font-style: italic; background: var(--soft); padding: 8px 12px; border-radius: 6px; }
.muted { color: var(--muted); font-weight: normal; }
.note { background: #fff8e6; border-left: 4px solid #c2844f; padding: 8px 12px; border-radius: 0 6px 6px 0; }
.round { border-left: 3px solid var(--line); padding: 0 0 0 14px; margin: 12px 0; }
.round h3 { margin: 0; }
.round-summary { margin: 2px 0 4px; color: #444; font-size: 14px; }
.round ul { margin: 4px 0; padding-left: 20px; }
.class-row { display: flex; gap: 14px; align-items: flex-start; padding: 10px 0; border-bottom: 1px solid var(--line); }
.class-name { flex: 0 0 150px; font-weight: 600; word-break: break-word; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; }
figure.item, figure.pair { text-align: center; font-size: 12px; color: var(--muted); }
figure.pair { border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
.pair-images { display: flex; align-items: center; gap: 6px; justify-content: center; }
.arrow { color: var(--muted); font-size: 18px; }
img.thumb { display: block; margin: 0 auto 3px; border-radius: 4px; background: #000; }
img.pixelated { image-rendering: pixelated; }
.noimg { display: inline-flex; align-items: center; justify-content: center; background: var(--soft);
  color: var(--muted); font-size: 11px; border-radius: 4px; }
.tag { display: inline-block; border-radius: 4px; padding: 0 5px; font-size: 11px; color: #fff; }
.uri { color: var(--muted); font-size: 12px; word-break: break-all; }
table.numeric { width: auto; min-width: 50%; }
table.issues td { vertical-align: middle; }
table.issues td:not(:first-child) { white-space: nowrap; }
.issue-item { display: flex; align-items: center; gap: 12px; }
.issue-item img.thumb { margin: 0; }
td .tag { margin-right: 3px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line);
         padding-top: 10px; }
"""


def _css() -> str:
    tags = "".join(f".tag-{name} {{ background: {color}; }}\n" for name, color in figures.SOURCE_COLORS.items())
    return _CSS + tags


def render_report(data: ReportData) -> str:
    """The whole report as one HTML document (str); needs matplotlib for the plots."""
    if not isinstance(data, ReportData):
        raise BadInputError(f"render_report needs a ReportData, got {type(data).__name__}",
                            hint="build one with metalabel.report.ReportData(...) or report.collect")
    sections = "".join(
        f'<section id="{key}"><h2>{_e(title)}</h2>{_notes(data, key)}{_RENDERERS[key](data)}</section>'
        for key, title in SECTIONS
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(data.project)} · metalabel report</title><style>{_css()}</style></head>"
        f"<body><main>{_header(data)}{sections}"
        f"<footer>Written by metalabel from project {_e(data.project)} as of {_e(data.created)}. "
        "This page is self-contained: it needs no network and no scripts.</footer></main></body></html>\n"
    )


def write_report(data: ReportData, path: str | Path) -> Path:
    """Render ``data`` and write it to ``path`` atomically; an old report is replaced only once the new one is whole."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError("is a folder, not a file name", path=path, hint="give a file name such as report.html")
    page = render_report(data)  # before touching the disk: a failed render leaves the old report as it was
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, page)
