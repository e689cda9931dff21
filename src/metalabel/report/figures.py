"""The report's pictures as PNG bytes: matplotlib plots and item thumbnails.

matplotlib is imported inside the plotting functions (it is an optional extra and
slow to import); figures are drawn on ``matplotlib.figure.Figure`` with no pyplot,
so nothing here touches the caller's global backend or open figures.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from metalabel.errors import MissingDependencyError
from metalabel.evaluate.records import Confusion, Reliability
from metalabel.report.data import RoundPoint

SOURCE_COLORS = {
    "human": "#3b6ea8",
    "imported": "#7d8fa3",
    "model": "#5a9a6b",
    "generated": "#c2844f",
    "augmented": "#b39b4c",
}
"""One muted colour per label source, shared by the plots and the HTML tags."""

ACCENT = "#3b6ea8"
AUDIT = "#b5533c"
GOLD = "#6d5a9c"
RETRACTED = "#a04545"
MUTED = "#8a8a8a"

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9a9a9a",
    "axes.labelcolor": "#333333",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e8e8e8",
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    # class names and other user text are shown as typed: "$\\alpha^$" is a name, not mathtext to parse
    "text.parse_math": False,
    "text.usetex": False,
}


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.figure
    except ImportError as error:
        raise MissingDependencyError(
            "the HTML report draws its plots with matplotlib, which is not installed: "
            "pip install 'metalabel[report]'"
        ) from error
    return matplotlib


@contextmanager
def _figure(width: float, height: float, **options: Any) -> Iterator[Any]:
    matplotlib = _matplotlib()
    with matplotlib.rc_context(_STYLE):
        yield matplotlib.figure.Figure(figsize=(width, height), layout="constrained", **options)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # no Software/date metadata: the same data gives the same bytes
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def image_png(image: np.ndarray, *, max_side: int = 160) -> bytes:
    """A PNG thumbnail of a uint8 ``[H, W]`` or ``[H, W, 3]`` image, no side above ``max_side``."""
    picture = Image.fromarray(image)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _percent(values: Sequence[float | None]) -> np.ndarray:
    # NaN where not measured: matplotlib breaks the line there instead of drawing through zero
    return np.array([np.nan if v is None else 100.0 * v for v in values], dtype=float)


def _interval(intervals: Sequence[tuple[float, float] | None]) -> tuple[np.ndarray, np.ndarray]:
    return (_percent([None if ci is None else ci[0] for ci in intervals]),
            _percent([None if ci is None else ci[1] for ci in intervals]))


def _not_measured(ax: Any) -> None:
    ax.text(0.5, 0.5, "not measured yet", transform=ax.transAxes, ha="center", va="center", color=MUTED)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _round_axis(ax: Any, rounds: np.ndarray) -> None:
    ax.set_xlim(rounds.min() - 0.6, rounds.max() + 0.6)  # the same x range in every panel, bars included
    if len(rounds) <= 20:
        ax.set_xticks(rounds)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")


def _labels_panel(ax: Any, x: np.ndarray, rounds: Sequence[RoundPoint]) -> None:
    bottom = np.zeros(len(x))
    for name, counts in (("human", [r.human_labels for r in rounds]),
                         ("model", [r.model_labels for r in rounds]),
                         ("generated", [r.generated_items for r in rounds]),
                         ("augmented", [r.augmented_items for r in rounds])):
        values = np.asarray(counts, dtype=float)
        if values.any():
            ax.bar(x, values, bottom=bottom, width=0.6, color=SOURCE_COLORS[name], label=name)
            bottom += values
    top = max(bottom.max(initial=0), 1) * 1.2  # headroom keeps the legend off the bars
    reference = np.asarray([r.reference_answers for r in rounds], dtype=float)
    if reference.any():
        ax.plot(x, reference, "_", color="#222222", markersize=16, markeredgewidth=2,
                label="of which reference answers")
    retracted = np.asarray([r.retracted for r in rounds], dtype=float)
    floor = 0.0
    if retracted.any():  # below the axis: labels taken back, not added
        ax.bar(x, -retracted, width=0.6, color=RETRACTED, label="retracted (model)")
        floor = -retracted.max() * 1.2
        ax.axhline(0, color="#9a9a9a", linewidth=0.8)
    ax.set_ylim(floor, top)
    ax.set_ylabel("labels")
    ax.legend(loc="upper left", ncol=3)


def _precision_panel(ax: Any, x: np.ndarray, rounds: Sequence[RoundPoint], target: float | None) -> bool:
    certified = _percent([r.certified_precision for r in rounds])
    estimate = _percent([r.estimated_precision for r in rounds])
    reference = _percent([r.reference_in_accepted for r in rounds])
    reference_low, reference_high = _interval([r.reference_in_accepted_ci for r in rounds])
    gold = _percent([r.gold_label_accuracy for r in rounds])
    achieved = _percent([r.achieved_precision for r in rounds])
    if np.isnan(np.concatenate([certified, estimate, reference, gold, achieved])).all():
        return False
    if not np.isnan(certified).all():
        deltas = sorted({r.delta for r in rounds if r.certified_precision is not None and r.delta is not None})
        level = f" (1 - delta = {1 - deltas[0]:g})" if len(deltas) == 1 else ""
        # a round with no certificate leaves a gap: nothing is claimed there
        ax.plot(x, certified, "o-", color=ACCENT, linewidth=2, label=f"certified lower bound{level}")
    if not np.isnan(estimate).all():
        ax.plot(x, estimate, "o--", color=ACCENT, alpha=0.55, markersize=4, label="point estimate (not a guarantee)")
    if not np.isnan(reference).all():
        has_ci = ~np.isnan(reference_low)
        error = np.zeros((2, len(x)))
        error[0, has_ci] = reference[has_ci] - reference_low[has_ci]
        error[1, has_ci] = reference_high[has_ci] - reference[has_ci]
        # nudged right so the bars do not hide the certificate's markers
        ax.errorbar(x + 0.08, reference, yerr=error, fmt="s", color=AUDIT, capsize=3, markersize=5,
                    label="reference answers in the accepted region")
    if not np.isnan(gold).all():
        ax.plot(x, gold, "D--", color=GOLD, markersize=4, label="accuracy vs gold")
    if not np.isnan(achieved).all():
        ax.plot(x, achieved, "^:", color=GOLD, markersize=5, label="achieved precision vs gold")
    if target is not None:
        ax.axhline(100 * target, color=MUTED, linestyle=(0, (4, 3)), linewidth=1, label="target")
    lowest = np.nanmin(np.concatenate([certified, estimate, reference, reference_low, gold, achieved,
                                       [100 * target if target is not None else np.nan]]))
    ax.set_ylim(max(0.0, lowest - 3.0), 100.8)
    ax.set_ylabel("%")
    ax.legend(loc="best")
    return True


def _line_panel(ax: Any, x: np.ndarray, series: Sequence[tuple[str, np.ndarray, str, str]]) -> bool:
    shown = [(label, values, style, color) for label, values, style, color in series if not np.isnan(values).all()]
    if not shown:
        return False
    for label, values, style, color in shown:
        ax.plot(x, values, style, color=color, label=label)
    ax.set_ylabel("%")
    ax.legend(loc="best")
    return True


def rounds_png(rounds: Sequence[RoundPoint], *, target_precision: float | None = None) -> bytes:
    """A 2x2 figure across rounds: labels by source, precision, coverage, accuracy."""
    rounds = sorted(rounds, key=lambda r: r.round_id)
    x = np.array([r.round_id for r in rounds], dtype=float)
    with _figure(11, 7.2) as figure:
        (labels_ax, precision_ax), (coverage_ax, accuracy_ax) = figure.subplots(2, 2)
        labels_ax.set_title("Labels by source")
        precision_ax.set_title("Precision of the labels")
        coverage_ax.set_title("Coverage of the pool")
        accuracy_ax.set_title("Accuracy")
        _labels_panel(labels_ax, x, rounds)
        precision_drawn = _precision_panel(precision_ax, x, rounds, target_precision)
        coverage_drawn = _line_panel(coverage_ax, x, [
            ("accepted share of the unlabeled pool", _percent([r.coverage for r in rounds]), "o-", ACCENT)])
        accuracy_drawn = _line_panel(accuracy_ax, x, [
            ("on held-out human labels", _percent([r.held_out_accuracy for r in rounds]), "o-", ACCENT),
            ("downstream, real data", _percent([r.downstream_real for r in rounds]), "s-", SOURCE_COLORS["model"]),
            ("downstream, real + generated", _percent([r.downstream_with_generated for r in rounds]), "^--",
             SOURCE_COLORS["generated"]),
        ])
        coverage_ax.set_ylim(0, 100.8)
        if accuracy_drawn:  # the same top as precision, so the two panels read alike
            accuracy_ax.set_ylim(max(0.0, accuracy_ax.get_ylim()[0] - 2.0), 100.8)
        for ax, drawn in ((labels_ax, True), (precision_ax, precision_drawn), (coverage_ax, coverage_drawn),
                          (accuracy_ax, accuracy_drawn)):
            if drawn:
                _round_axis(ax, x)
            else:
                _not_measured(ax)
        return _png(figure)


def reliability_png(reliability: Reliability, *, ece: float | None = None) -> bytes:
    """Reliability diagram: accuracy against confidence per bin, the diagonal, and counts below."""
    confidence = np.array([np.nan if c is None else c for c in reliability.confidence], dtype=float)
    accuracy = np.array([np.nan if a is None else a for a in reliability.accuracy], dtype=float)
    count = np.array([0 if n is None else n for n in reliability.count], dtype=float)
    kept = (count > 0) & ~np.isnan(accuracy)  # an empty bin has no accuracy to plot
    confidence, accuracy, count = confidence[kept], accuracy[kept], count[kept]
    width = 0.8 * float(np.min(np.diff(np.sort(confidence)))) if len(confidence) > 1 else 0.05
    with _figure(5.6, 5.4) as figure:
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], linestyle=(0, (4, 3)), color=MUTED, linewidth=1, label="perfectly calibrated")
        top.vlines(confidence, confidence, accuracy, color=AUDIT, alpha=0.6, linewidth=2, label="gap")
        top.plot(confidence, accuracy, "o-", color=ACCENT, label="observed accuracy")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_ylabel("accuracy")
        top.set_title("Reliability" + ("" if ece is None else f"  (ECE {ece:.3f})"))
        top.legend(loc="upper left")
        bottom.bar(confidence, count, width=width, color=ACCENT, alpha=0.7)
        for position, value in zip(confidence, count):
            bottom.annotate(f"{int(value):,}", (position, value), ha="center", va="bottom", fontsize=7, color="#444")
        bottom.set_ylim(0, max(count.max(initial=0) * 1.3, 1))
        bottom.set_xlabel("confidence")
        bottom.set_ylabel("items")
        return _png(figure)


def plot_labels(classes: Sequence[str]) -> list[str]:
    """Class names as the plotting font can draw them: characters it lacks are left out.

    The usual font has no CJK glyphs, so ``"U+6C34 水"`` becomes ``"U+6C34"``
    rather than an empty box; a name with nothing left becomes ``"class i"``.
    """
    matplotlib = _matplotlib()
    from matplotlib import font_manager, ft2font

    with matplotlib.rc_context(_STYLE):
        drawable = set(ft2font.FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())
    labels = []
    for index, name in enumerate(classes):
        kept = "".join(ch for ch in str(name) if ord(ch) in drawable or ch.isspace()).strip()
        labels.append(kept or f"class {index}")
    return labels


def _short_labels(labels: list[str], longest: int = 24) -> list[str]:
    # keep both ends: names like "comp.sys.ibm.pc.hardware" differ at the end as often as at the start
    head = (longest - 1) // 2
    short = [name if len(name) <= longest else name[:head] + "…" + name[-(longest - 1 - head):] for name in labels]
    if len(set(short)) < len(short):
        short = [f"{index}: {name}" for index, name in enumerate(short)]
    return short


def confusion_png(confusion: Confusion) -> bytes:
    """Heatmap of the confusion matrix: counts written in, colours normalized per row."""
    matrix = np.asarray(confusion.matrix, dtype=float).reshape(len(confusion.classes), len(confusion.classes))
    size = len(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    labels = _short_labels(plot_labels(confusion.classes))
    side = max(4.8, 0.42 * size + 2.8)
    with _figure(side + 0.8, side) as figure:
        ax = figure.subplots()
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        if size <= 25:  # beyond that the numbers no longer fit their cells
            for row in range(size):
                for column in range(size):
                    if matrix[row, column]:
                        ax.text(column, row, f"{int(matrix[row, column]):,}", ha="center", va="center",
                                fontsize=8 if size <= 12 else 6,
                                color="white" if share[row, column] > 0.55 else "#333333")
        ax.set_xticks(range(size), labels, rotation=45 if max(map(len, labels), default=0) > 3 else 0,
                      ha="right" if max(map(len, labels), default=0) > 3 else "center")
        ax.set_yticks(range(size), labels)
        ax.set_xlabel("metalabel's label")
        ax.set_ylabel(f"reference ({confusion.against})")
        figure.colorbar(image, ax=ax, shrink=0.8, label="share of the row")
        return _png(figure)
