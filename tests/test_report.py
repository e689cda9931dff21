"""The HTML report, built from real kanji images and real 20 Newsgroups posts.

The kanji report's model numbers come from a nearest-centroid classifier run on the
rendered characters (so the confusion matrix, reliability diagram and label issues
are measured, not drawn by hand); the per-round numbers follow the README's demo run.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel.datasets
from metalabel.data.dataset import LabeledDataset
from metalabel.errors import BadInputError, MissingDependencyError
from metalabel.evaluate.records import Confusion, Downstream, Reliability, Similarity
from metalabel.report import (
    SECTIONS,
    LabelIssue,
    ReportData,
    RetractedLabel,
    RoundPoint,
    Sample,
    ScorecardRow,
    figures,
    render_report,
    write_report,
)

HOSTILE = '<script>alert("x")</script> & co'
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def kanji(tmp_path_factory: pytest.TempPathFactory) -> LabeledDataset:
    with pytest.MonkeyPatch.context() as patch:  # a private cache: tests never touch the user's
        patch.setenv("METALABEL_CACHE", str(tmp_path_factory.mktemp("cache")))
        return metalabel.datasets.load("kanji", split="evaluation", max_classes=6, samples_per_class=10,
                                       progress=False)


@pytest.fixture(scope="module")
def news() -> LabeledDataset:
    return metalabel.datasets.load("20newsgroups", split="test")


def nearest_centroid(data: LabeledDataset, shots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query indices, their true labels and class probabilities from ``shots`` labels per class."""
    pixels = data.items.reshape(len(data), -1).astype(np.float64) / 255
    support = np.concatenate([idx[:shots] for idx in data.class_indices()])
    query = np.concatenate([idx[shots:] for idx in data.class_indices()])
    centroids = np.stack([pixels[support][data.labels[support] == c].mean(0) for c in range(data.num_classes)])
    distance = ((pixels[query, None, :] - centroids[None]) ** 2).sum(-1)
    logits = -(distance - distance.min(1, keepdims=True)) / (0.05 * distance.mean())
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return query, data.labels[query], probabilities


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[Reliability, float]:
    """The filled bins and the ECE over them."""
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    kept = [b for b in range(bins) if (which == b).any()]
    counts = [float((which == b).sum()) for b in kept]
    mean_conf = [float(confidence[which == b].mean()) for b in kept]
    accuracy = [float(correct[which == b].mean()) for b in kept]
    ece = sum(n * abs(a - c) for n, a, c in zip(counts, accuracy, mean_conf)) / len(confidence)
    edges = tuple(float(e) for e in np.linspace(0, 1, bins + 1))
    return Reliability(edges, tuple(mean_conf), tuple(accuracy), tuple(counts)), ece


def kanji_report(data: LabeledDataset, *, rename: dict[str, str] | None = None) -> ReportData:
    names = [(rename or {}).get(name, name) for name in data.class_names]
    query, truth, probabilities = nearest_centroid(data, shots=3)
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    confusion = np.zeros((data.num_classes, data.num_classes), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)

    samples = []
    for c, idx in enumerate(data.class_indices()):
        samples += [Sample(names[c], data.uris[i], "human", image=data.items[i], round_id=0) for i in idx[:2]]
        for i in idx[3:6]:
            q = int(np.flatnonzero(query == i)[0])
            samples.append(Sample(names[c], data.uris[i], "model", image=data.items[i],
                                  confidence=float(confidence[q]), round_id=1 + q % 3))
    generated = []
    for c, idx in enumerate(data.class_indices()[:4]):
        parent = int(idx[0])
        for name, image in (("shift-2px v1", np.roll(data.items[parent], 2, axis=1)),
                            ("elastic v2", np.roll(data.items[parent], (1, -1), axis=(0, 1)))):
            generated.append(Sample(names[c], f"{data.uris[parent]}#{name.split()[0]}", "augmented", image=image,
                                    round_id=2, generator=name, parents=(data.uris[parent],)))
    order = np.argsort(probabilities[np.arange(len(query)), truth])[:5]  # least sure of the given label
    issues = tuple(
        LabelIssue(data.uris[query[k]], names[truth[k]], names[predicted[k]],
                   float(probabilities[k, truth[k]]), image=data.items[query[k]])
        for k in order
    )
    rounds = (
        RoundPoint(1, 30, 0, 0, 0, 0.0, delta=0.05, reference_answers=0, reference_needed=59,
                   held_out_accuracy=0.963, gold_label_accuracy=0.963, model="kanji-protonet@a1f3",
                   certificate="nothing certified: no reference answers yet",
                   feedback=("first round: one label per class, nothing certified yet",)),
        RoundPoint(2, 50, 282, 0, 16, 0.513, certified_precision=0.951, delta=0.05, estimated_precision=0.975,
                   threshold=0.93, reference_answers=60, reference_needed=0, reference_in_accepted=0.97,
                   reference_in_accepted_ci=(0.85, 0.995), reference_in_accepted_count=31, held_out_accuracy=0.95,
                   gold_label_accuracy=0.990, achieved_precision=0.996, downstream_real=0.91,
                   downstream_with_generated=0.92, model="kanji-protonet@a1f3",
                   feedback=("certified 51.3% of the pool at >= 95.1% with 60 reference answers",
                             "augmented 2 thin classes with shift-2px v1")),
        RoundPoint(3, 70, 434, 0, 32, 0.819, certified_precision=0.955, delta=0.05, estimated_precision=0.976,
                   threshold=0.88, reference_answers=70, reference_needed=0, retracted=12, reference_in_accepted=0.98,
                   reference_in_accepted_ci=(0.9, 0.996), reference_in_accepted_count=52, held_out_accuracy=0.96,
                   gold_label_accuracy=0.992, achieved_precision=0.998, downstream_real=0.93,
                   downstream_with_generated=0.935, model="kanji-protonet@a1f3",
                   feedback=("dropped augmentation hflip: held-out accuracy -1.2 pts",)),
        RoundPoint(4, 90, 495, 0, 32, 0.971, certified_precision=0.962, delta=0.05, estimated_precision=0.973,
                   threshold=0.81, reference_answers=80, reference_needed=0, retracted=3, reference_in_accepted=0.985,
                   reference_in_accepted_ci=(0.93, 0.997), reference_in_accepted_count=68, held_out_accuracy=0.97,
                   gold_label_accuracy=0.993, achieved_precision=0.996, downstream_real=0.94,
                   downstream_with_generated=0.95, model="kanji-protonet@c77e"),
    )
    retracted = tuple(
        RetractedLabel(data.uris[int(idx[7])], names[c], retracted_round=3 + c % 2,
                       reason="calibrated confidence 0.871 below the certified threshold 0.880", round_id=2,
                       confidence=0.871, certified_precision=0.951, image=data.items[int(idx[7])])
        for c, idx in enumerate(data.class_indices()[:3])
    )
    reliability, ece = reliability_bins(confidence, predicted == truth)
    return ReportData(
        project="kanji-demo", pool="kanji:evaluation", modality="image", classes=tuple(names),
        created="2025-05-04T10:21:07+00:00",
        counts={"items": 600, "labeled": 585, "human": 90, "model": 495, "augmented": 32, "open_questions": 20,
                "retracted": 15},
        retracted=retracted,
        rounds=rounds,
        reliability=reliability, ece=ece,
        confusion=Confusion("gold labels", tuple(names), tuple(map(tuple, confusion.tolist())),
                            tuple(float(v) for v in confusion.diagonal() / confusion.sum(1))),
        samples=tuple(samples), generated=tuple(generated),
        parent_images={data.uris[int(idx[0])]: data.items[int(idx[0])] for idx in data.class_indices()},
        similarity={"shift-2px v1": Similarity(mmd=0.0123, frechet=4.71, precision=0.91, recall=0.64, real=60,
                                               generated=16),
                    "elastic v2": Similarity(mmd=0.0311, frechet=9.3, precision=0.83, recall=0.71, real=60,
                                             generated=16)},
        downstream=Downstream(real_only=0.94, with_generated=0.95, gain=0.01, tstr=0.71, test_size=120, generated=32,
                              test="kanji:evaluation held-out samples"),
        label_issues=issues,
        scorecard=(ScorecardRow("Labels", "estimated precision", "97.3%", "95.5-98.4%, Wilson"),
                   ScorecardRow("Labels", "coverage", "97.1%", "585 of 600 items"),
                   ScorecardRow("Calibration", "ECE", "0.031", "15 bins, out-of-fold human labels"),
                   ScorecardRow("Generated", "downstream gain", "+1.0 pts", "shift-2px v1, elastic v2")),
        target_precision=0.95,
    )


def news_report(data: LabeledDataset) -> ReportData:
    classes = data.class_names[:4]
    samples = tuple(
        Sample(classes[c], data.uris[i], source, text=data.items[i], confidence=conf, round_id=r)
        for c, idx in enumerate(data.class_indices()[:4])
        for i, source, conf, r in zip(idx[:3], ("human", "model", "model"), (None, 0.93, 0.81), (0, 1, 2))
    )
    suspect = data.class_indices()[1][5]
    return ReportData(
        project="news", pool="20newsgroups:test", modality="text", classes=tuple(classes),
        created="2025-05-04T10:21:07+00:00", counts={"items": 1500, "human": 40, "model": 310},
        rounds=(RoundPoint(1, 20, 0, 0, 0, 0.0, delta=0.05, reference_answers=10, reference_needed=None),
                RoundPoint(2, 40, 310, 0, 0, 0.23, certified_precision=0.9, delta=0.1, estimated_precision=0.93,
                           threshold=0.7, reference_answers=30)),
        samples=samples,
        label_issues=(LabelIssue(data.uris[suspect], classes[1], classes[2], 0.12, text=data.items[suspect]),),
        why_missing={"confusion": "no gold labels were imported for this pool"},
    )


def pngs(page: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    images = []
    for encoded in found:
        image = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
        image.load()
        images.append(image)
    return images


@pytest.fixture(scope="module")
def kanji_page(kanji: LabeledDataset) -> str:
    return render_report(kanji_report(kanji))


def test_page_is_self_contained_with_every_section_in_order(kanji_page: str) -> None:
    assert "<script" not in kanji_page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", kanji_page, re.I)
    assert "url(" not in kanji_page and "@import" not in kanji_page
    positions = [kanji_page.find(f"<h2>{title}</h2>") for _, title in SECTIONS]
    assert -1 not in positions and positions == sorted(positions)
    assert "Not measured yet" not in kanji_page  # every section of this report has data
    verdict = re.search(r'<p class="verdict">(.*?)</p>', kanji_page).group(1)
    assert verdict.startswith("585 of 600 items labeled (98%) after 4 rounds")
    assert ("Certified precision &gt;= 96.2% (delta 0.05): holds with probability 0.95 over the 80 reference "
            "answers, meeting the 95.0% target; point estimate 97.3%; coverage 97.1% of the unlabeled pool.") in verdict
    assert "Against gold labels the accepted model labels are 99.6% precise" in verdict
    assert "15 model labels retracted so far" in verdict
    assert not re.search(r"\bnan\b", re.sub(r"base64,[A-Za-z0-9+/=]+", "", kanji_page), re.I)
    assert verdict.endswith("20 questions to answer; 5 labels that look wrong (see Label issues).")


def test_embedded_pngs_decode_and_show_every_item(kanji: LabeledDataset, kanji_page: str) -> None:
    report = kanji_report(kanji)
    images = pngs(kanji_page)
    parents_shown = sum(len(g.parents) for g in report.generated)
    thumbnails = (len(report.samples) + len(report.generated) + parents_shown + len(report.label_issues)
                  + len(report.retracted))
    assert len(images) == 3 + thumbnails  # rounds, reliability and confusion figures
    figures = [image for image in images if image.width > 200]
    assert len(figures) == 3 and all(image.height > 200 for image in figures)
    assert thumbnails > 0 and all(image.size == (28, 28) for image in images if image.width <= 200)


def test_same_data_same_page(kanji: LabeledDataset, kanji_page: str) -> None:
    assert render_report(kanji_report(kanji)) == kanji_page


def test_user_text_is_escaped(kanji: LabeledDataset) -> None:
    page = render_report(kanji_report(kanji, rename={kanji.class_names[0]: HOSTILE}))
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page


def test_text_report_shows_snippets_and_says_what_is_not_measured(news: LabeledDataset) -> None:
    report = news_report(news)
    page = render_report(report)
    first_words = " ".join(report.samples[0].text.split()[:8])
    assert first_words in page
    missing = re.findall(r'<p class="missing">Not measured yet: (.*?)</p>', page)
    # scorecard, reliability, confusion, retracted, generated, similarity, downstream
    assert len(missing) == 7
    assert "no gold labels were imported for this pool." in missing
    assert report.label_issues[0].uri in page
    assert len(pngs(page)) == 1  # only the per-round figure: text has no thumbnails


def test_a_new_project_renders_every_section_as_not_measured() -> None:
    empty = ReportData(project="fresh", pool="pool/", modality="image", classes=("cat", "dog"),
                       created="2025-05-04T10:21:07+00:00", counts={"items": 500, "imported": 10})
    page = render_report(empty)
    assert page.count("Not measured yet:") == len(SECTIONS) + 1  # + downstream, inside the similarity section
    assert "10 of 500 items labeled (2%): 10 by import." in page


def test_write_report_is_atomic(
    kanji: LabeledDataset, kanji_page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_report(kanji_report(kanji), tmp_path / "out" / "report.html")
    assert target == tmp_path / "out" / "report.html"
    assert target.read_text(encoding="utf-8") == kanji_page
    assert os.listdir(target.parent) == ["report.html"]
    report = ReportData(project="fresh", pool="pool/", modality="image", classes=("cat",), created="today")

    def crash(source: str, destination: str) -> None:
        raise OSError("disk full")

    target.write_text("old report", encoding="utf-8")
    monkeypatch.setattr("metalabel.files.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_report(report, target)
    assert target.read_text(encoding="utf-8") == "old report"
    assert os.listdir(target.parent) == ["report.html"]  # no temporary file left behind
    with pytest.raises(BadInputError, match="is a folder"):
        write_report(report, tmp_path)


def test_bad_input_names_what_is_wrong(kanji: LabeledDataset) -> None:
    with pytest.raises(BadInputError, match=r"sample kanji:x/1.*uint8.*float64"):
        Sample("a", "kanji:x/1", "human", image=kanji.items[0] / 255)
    with pytest.raises(BadInputError, match="unknown source 'crowd'"):
        Sample("a", "kanji:x/1", "crowd")
    with pytest.raises(BadInputError, match="round 3: coverage must be a fraction.*not percentages"):
        RoundPoint(3, 10, 10, 0, 0, 95.0)
    with pytest.raises(BadInputError, match="round 3: certified_precision must be a fraction"):
        RoundPoint(3, 10, 10, 0, 0, 0.5, certified_precision=float("nan"))
    with pytest.raises(BadInputError, match="round 3: a point estimate of precision needs a certificate"):
        RoundPoint(3, 10, 10, 0, 0, 0.5, estimated_precision=0.97)
    with pytest.raises(BadInputError, match="round 3: retracted must be a whole number"):
        RoundPoint(3, 10, 10, 0, 0, 0.5, retracted=-1)
    with pytest.raises(BadInputError, match="feedback must be a sequence of lines"):
        RoundPoint(3, 10, 10, 0, 0, 0.5, feedback="raised the target")
    report = kanji_report(kanji)
    with pytest.raises(BadInputError, match="confusion matrix must be 6 x 6"):
        dataclasses.replace(report, confusion=Confusion("gold labels", report.classes, ((1, 2), (3, 4)), (0.3, 0.6)))
    with pytest.raises(BadInputError, match="reliability lists have different lengths"):
        dataclasses.replace(report, reliability=Reliability((0.0, 0.5, 1.0), (0.5, 0.9), (0.5,), (3.0, 4.0)))
    with pytest.raises(BadInputError, match="confusion is a dict, not a Confusion"):
        dataclasses.replace(report, confusion={"classes": report.classes, "matrix": [[1, 2], [3, 4]]})
    with pytest.raises(BadInputError, match="needs a ReportData"):
        render_report({"project": "x"})


def test_missing_matplotlib_says_how_to_install(kanji: LabeledDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'metalabel\[report\]'"):
        render_report(kanji_report(kanji))


def test_importing_the_report_does_not_import_matplotlib() -> None:
    code = "import sys, metalabel.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_chromium_draws_the_page(kanji: LabeledDataset, tmp_path: Path) -> None:
    page = write_report(kanji_report(kanji), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000", f"--screenshot={shot}",
         page.as_uri()],
        check=True, timeout=120, capture_output=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (4000, 1280)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.02  # text, tables and plots, not a blank page



MATHTEXT_NAMES = ("$\\alpha^$", "$x$", "a$b$c", "\\frac{1}{2}", "$$", "^_{}")


def test_class_names_that_look_like_mathtext_are_drawn_literally(
    kanji: LabeledDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.text import Text

    drawn: list[tuple[str, bool]] = []
    real_png = figures._png

    def recording_png(figure) -> bytes:
        png = real_png(figure)  # draws the figure: the tick labels exist only after that
        drawn.extend((text.get_text(), text.get_parse_math()) for text in figure.findobj(Text) if text.get_text())
        return png

    monkeypatch.setattr(figures, "_png", recording_png)
    rename = dict(zip(kanji.class_names, MATHTEXT_NAMES))
    page = render_report(dataclasses.replace(kanji_report(kanji, rename=rename), project="$\\beta_$ project"))
    shown = {text for text, _ in drawn}
    assert set(MATHTEXT_NAMES) <= shown  # the confusion matrix's ticks carry each name as typed
    assert not any(parse_math for _, parse_math in drawn)
    for name in MATHTEXT_NAMES:
        assert f'<span class="chip">{html.escape(name)}</span>' in page
    assert "The plot leaves out characters" not in page  # nothing had to be dropped or renamed


def test_every_user_string_is_escaped_in_the_page(kanji: LabeledDataset) -> None:
    def hostile(field: str) -> str:
        return f'<script>{field}</script>"\'&$\\alpha^$'

    report = kanji_report(kanji, rename={kanji.class_names[0]: hostile("class")})
    first = report.samples[0]
    rounds = list(report.rounds)
    rounds[0] = dataclasses.replace(rounds[0], model=hostile("model"), feedback=(hostile("feedback"),))
    generated = list(report.generated)
    generated[0] = dataclasses.replace(generated[0], generator=hostile("generator"), uri=hostile("generated-uri"))
    issues = list(report.label_issues)
    issues[0] = dataclasses.replace(issues[0], uri=hostile("issue-uri"), suggested=hostile("class"))
    report = dataclasses.replace(
        report, project=hostile("project"), pool=hostile("pool"), created=hostile("created"),
        rounds=tuple(rounds), generated=tuple(generated), label_issues=tuple(issues),
        samples=(dataclasses.replace(first, uri=hostile("sample-uri")),) + report.samples[1:],
        confusion=dataclasses.replace(report.confusion, against=hostile("against")),
        similarity={hostile("similarity"): next(iter(report.similarity.values()))},
        downstream=dataclasses.replace(report.downstream, test=hostile("test")),
        scorecard=(ScorecardRow(hostile("section"), hostile("metric"), hostile("value"), hostile("detail")),),
        why_missing={"scorecard": hostile("why")},
    )
    page = render_report(report)
    assert "<script" not in page.lower()
    fields = ("class", "model", "feedback", "generator", "generated-uri", "issue-uri", "project", "pool", "created",
              "sample-uri", "against", "similarity", "test", "section", "metric", "value", "detail")
    for field in fields:
        assert html.escape(hostile(field), quote=True) in page, field


def test_read_artifact_arrays_refuses_damaged_files_with_a_typed_error(tmp_path: Path) -> None:
    from metalabel.report.collect import read_artifact_arrays

    good = tmp_path / "round-1.npz"
    np.savez(good, **{"vae.content": np.zeros((2, 28, 28), dtype=np.uint8)})
    assert read_artifact_arrays(good)["vae.content"].shape == (2, 28, 28)
    truncated = tmp_path / "round-2.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    pickled = tmp_path / "round-3.npz"
    np.savez(pickled, **{"vae.content": np.array([{"a": 1}, None], dtype=object)})
    single = tmp_path / "round-4.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    garbage = tmp_path / "round-5.npz"
    garbage.write_bytes(b"\x00garbage" * 100)
    for path in (truncated, pickled, single, garbage, tmp_path / "round-6.npz"):
        with pytest.raises(BadInputError, match=re.escape(str(path))):
            read_artifact_arrays(path)


def test_rounds_table_shows_the_certificate_with_delta_or_what_it_would_take(kanji_page: str) -> None:
    table = re.search(r'<table class="numeric rounds">(.*?)</table>', kanji_page).group(1)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    rows = [row for row in rows if row]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0][1] == "nothing certified yet: ~59 more reference answers" and rows[0][2] == "–"
    assert rows[1][1:4] == ["&gt;= 95.1% (delta 0.05)", "97.5%", "51.3%"]
    assert rows[2][6] == "98.0% of 52 (90.0–99.6%)" and rows[2][8] == "12" and rows[2][9] == "99.8%"
    headers = re.findall(r"<th>(.*?)</th>", table)
    assert "Reference in accepted region" in headers and "Achieved (gold)" in headers
    assert "certified precision nothing certified yet: ~59 more reference answers" in kanji_page  # the round log


def test_no_certificate_says_so_and_a_hopeless_one_says_a_better_model_is_needed(news: LabeledDataset) -> None:
    report = dataclasses.replace(news_report(news), rounds=news_report(news).rounds[:1])
    verdict = re.search(r'<p class="verdict">(.*?)</p>', render_report(report)).group(1)
    assert ("Nothing certified yet: at the error rate the reference sample shows, more reference answers alone "
            "will not certify the target; a better model will; 10 reference answers so far.") in verdict
    assert "%" not in verdict.split("Nothing certified yet")[1]  # no precision figure without a certificate


def test_retracted_labels_are_listed_with_item_class_round_and_reason(kanji: LabeledDataset, kanji_page: str) -> None:
    section = re.search(r'<section id="retracted"><h2>Retracted labels</h2>(.*?)</section>', kanji_page).group(1)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)]
    rows = [row for row in rows if row]
    report = kanji_report(kanji)
    assert len(rows) == len(report.retracted) == 3
    for row, label in zip(rows, report.retracted):
        assert html.escape(label.uri) in row[0] and "<img" in row[0]
        assert row[1:] == [html.escape(label.class_name), "2", "87.1%", str(label.retracted_round),
                           "calibrated confidence 0.871 below the certified threshold 0.880"]
    hostile = dataclasses.replace(report, retracted=(dataclasses.replace(report.retracted[0], reason=HOSTILE,
                                                                         class_name=HOSTILE, uri=HOSTILE),))
    page = render_report(hostile)
    assert "<script" not in page and page.count(html.escape(HOSTILE, quote=True)) >= 3
    many = dataclasses.replace(report, retracted=report.retracted * 80, counts={**report.counts, "retracted": 240})
    page = render_report(many)
    assert "Showing the latest 200 of 240" in page and "--include-retracted" in page
