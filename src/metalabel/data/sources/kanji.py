"""``kanji``: Omniglot-style handwritten characters rendered from KanjiVG stroke data.

KanjiVG (Ulrich Apel, CC BY-SA 3.0, https://kanjivg.tagaini.net) draws every
character as a list of SVG stroke paths. We render each stroke ourselves with
per-sample "handwriting" noise, so the 20 samples of a character look like 20
people wrote it, the way Omniglot's drawers did.

The data set, fixed by the KanjiVG release:

* Characters: base files only (variant files such as ``04e14-Kaisho.svg`` are
  skipped), CJK Unified Ideographs (U+4E00..U+9FFF) with at most
  ``MAX_STROKES`` strokes, so they stay legible at 28x28.
* Alphabets: the character's radical (KanjiVG's ``kvg:radical="general"``
  element; variant forms such as 氵 count as their original 水). The
  ``ALPHABET_COUNT`` radicals with the most characters become alphabets, each
  keeping its ``CHARACTERS_PER_ALPHABET`` simplest characters (fewest strokes,
  then code point). With KanjiVG 20260714 that is 50 alphabets, 1,646 characters.
* Split: alphabets ranked by size go background, evaluation, background,
  evaluation, background (repeat), so 30 alphabets / 986 characters are
  ``background`` and 20 alphabets / 660 characters ``evaluation``: the 60/40
  proportion of Omniglot (964/659), with disjoint alphabets and characters.
  ``max_classes`` only subsamples within a split; it never moves a character.

Images are uint8 ``[N, size, size]``, white strokes (255) on black (0), as
Omniglot is usually fed to a network. Sample ``j`` of every character is drawn
by "writer" ``j`` (a slant, proportions and pen width shared across
characters); the rest of the noise is per image. Every image is seeded by
``(seed, code point, sample index)`` alone, so it is the same bytes whichever
other images are built with it and however many processes build them.

Built sets are cached under ``cache_dir() / "kanji"``, keyed by every rendering
parameter, ``RENDERER_VERSION`` and the KanjiVG version.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metalabel.data.dataset import LabeledDataset
from metalabel.data.paths import cache_dir
from metalabel.errors import BadInputError, DataNotFoundError, UnreadableItemError, check_whole_number
from metalabel.files import write_atomically

RENDERER_VERSION = 1
"""Bump whenever a change to this file changes the rendered bytes; it retires old caches."""

SPLITS = ("background", "evaluation")
MAX_STROKES = 14
ALPHABET_COUNT = 50
CHARACTERS_PER_ALPHABET = 40
# Rank pattern of alphabets by size: 3 of every 5 go to background (Omniglot's 30/20 alphabets).
_SPLIT_PATTERN = ("background", "evaluation", "background", "evaluation", "background")

_CJK_UNIFIED = range(0x4E00, 0xA000)
_KANJIVG_BOX = 109.0  # KanjiVG's viewBox is 0 0 109 109
_FILL = 0.84  # the box fills 84% of the image: a margin, so jittered strokes stay inside
_SUPERSAMPLE = 4  # render at 4x and box-filter down: antialiased edges
_POINTS_PER_SEGMENT = 12
_PARALLEL_MIN_IMAGES = 4000  # below this, starting worker processes costs more than it saves

_SVG = "{http://www.w3.org/2000/svg}"
_KVG_ATTRIBUTES = ("{http://kanjivg.tagaini.net}", "{https://kanjivg.tagaini.net/}")
_BASE_FILE = re.compile(r"^([0-9a-f]{5})\.svg$")

# Handwriting noise, in KanjiVG units (the character box is 109 wide) or as ratios.
_NODE_JITTER = 1.3  # each Bezier control point wanders on its own: wobbly, uneven curves
_STROKE_SHIFT = 2.2  # whole strokes land a little off where they belong
_STROKE_TURN = 0.07  # radians; strokes come out at slightly different angles
_STROKE_STRETCH = 0.07  # strokes come out a little longer or shorter
_SAMPLE_TURN = 0.06  # radians; the whole character tilts
_SAMPLE_SHEAR = 0.06
_SAMPLE_STRETCH = 0.08
_SAMPLE_SHIFT = 5.0  # people do not place a character in the same spot twice
_WRITER_SLANT = 0.10  # each writer slants all their characters the same way
_WRITER_STRETCH = 0.08
_WRITER_PEN = (1.4, 2.3)  # pen width range, in output pixels at size 28
_DENSE_STROKES = 8  # above this many strokes the pen thins, so dense characters do not blot at 28x28
_STROKE_PEN_VARIATION = 0.10


@dataclass(frozen=True)
class KanjiCharacter:
    """One character's strokes as chains of cubic Bezier segments.

    ``nodes`` holds each sub-path's control points ``[P0, C1, C2, P1, C1, C2, P2, ...]``
    back to back; segment ``g`` is ``nodes[segment_nodes[g]]`` and belongs to
    stroke ``segment_stroke[g]``. Jittering nodes (not sampled points) keeps
    every stroke one connected curve.
    """

    codepoint: int
    alphabet: str
    stroke_count: int
    nodes: np.ndarray  # [P, 2] float64, KanjiVG units
    node_stroke: np.ndarray  # [P] stroke index of each node
    segment_nodes: np.ndarray  # [G, 4] node indices of each cubic segment
    segment_stroke: np.ndarray  # [G]


@dataclass(frozen=True)
class _Writer:
    """What one drawer keeps the same across all characters they draw."""

    shape: np.ndarray  # [2, 2] slant and proportions
    pen_width: float  # output pixels at size 28


@dataclass(frozen=True)
class _CatalogEntry:
    codepoint: int
    alphabet: str
    stroke_count: int
    path_data: tuple[str, ...]
    svg_path: str


def load(
    *,
    split: str = "background",
    root: str | Path | None = None,
    seed: int = 0,
    samples_per_class: int = 20,
    max_classes: int | None = None,
    size: int = 28,
    workers: int | None = None,
    progress: bool = True,
) -> LabeledDataset:
    """Render (or read from the cache) one split of the kanji data set.

    ``root`` is a folder of KanjiVG SVG files (e.g. a KanjiVG checkout's ``kanji/``);
    by default the files of the installed ``kanjivg`` package are used.
    ``max_classes`` keeps that many characters of the split, taken round-robin over
    its alphabets. ``workers`` processes render a large build (default: all cores);
    the bytes are the same for any number. ``progress`` shows a bar while rendering.
    """
    _check_split(split)
    check_whole_number("samples_per_class", samples_per_class, minimum=1)
    check_whole_number("size", size, minimum=8)
    check_whole_number("seed", seed, minimum=0)
    if max_classes is not None:
        check_whole_number("max_classes", max_classes, minimum=1)
    if workers is not None:
        check_whole_number("workers", workers, minimum=1)

    source = _locate_svgs(root)
    settings = {
        "renderer": RENDERER_VERSION,
        "kanjivg": source.version,
        "split": split,
        "seed": seed,
        "samples_per_class": samples_per_class,
        "max_classes": max_classes,
        "size": size,
        "catalog": [MAX_STROKES, ALPHABET_COUNT, CHARACTERS_PER_ALPHABET],
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    cache_file = cache_dir() / "kanji" / f"{split}-{key}.npz"

    cached = _read_cache(cache_file)
    if cached is None:
        split_entries = list(_catalog(source)[split])
        if not split_entries:
            raise DataNotFoundError(
                f"the KanjiVG files hold no characters for the {split} split",
                path=root,
                hint="use the full KanjiVG set (root=None, or KanjiVG's whole kanji/ folder)",
            )
        entries = _subsample(split_entries, max_classes)
        chosen = [_parse_strokes(entry) for entry in entries]
        images = _render_all(
            chosen, seed=seed, samples=samples_per_class, size=size, workers=workers, progress=progress
        )
        cached = {
            "images": images,
            "codepoints": np.array([c.codepoint for c in chosen], dtype=np.int64),
            "alphabets": np.array([c.alphabet for c in chosen], dtype=np.str_),
        }
        _write_cache(cache_file, cached)
    return _as_dataset(cached, split=split)


def characters(split: str, *, root: str | Path | None = None) -> list[KanjiCharacter]:
    """The characters of ``split`` with their parsed strokes, alphabet by alphabet (no rendering)."""
    _check_split(split)
    source = _locate_svgs(root)
    return [_parse_strokes(entry) for entry in _catalog(source)[split]]


def render(character: KanjiCharacter, *, seed: int, sample_index: int, size: int = 28) -> np.ndarray:
    """One handwritten sample of ``character``: uint8 ``[size, size]``, white on black."""
    rng = _image_rng(seed, character.codepoint, sample_index)
    return _render(character, _writer(seed, sample_index), rng, size)


# --- finding and reading KanjiVG ------------------------------------------------------


@dataclass(frozen=True)
class _SvgSource:
    files: tuple[str, ...]  # base-character SVG files
    version: str  # what the cache key trusts to change when the files do


def _locate_svgs(root: str | Path | None) -> _SvgSource:
    if root is not None:
        folder = Path(root)
        if not folder.is_dir():
            raise DataNotFoundError(
                "no such folder", path=folder, hint="pass a folder of KanjiVG SVG files, or root=None"
            )
        files = sorted(str(p) for p in folder.iterdir() if _BASE_FILE.match(p.name))
        if not files:
            raise DataNotFoundError(
                "no KanjiVG base SVG files (like 04e00.svg) in this folder",
                path=folder,
                hint="point root at KanjiVG's kanji/ folder, or leave root=None to use `pip install kanjivg`",
            )
        # A folder has no version: its size and newest change stand in for one.
        stats = [os.stat(f) for f in files]
        total_bytes, newest = sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)
        version = f"{folder.resolve()}:{len(files)}:{total_bytes}:{newest}"
        return _SvgSource(tuple(files), version)
    return _installed_svgs()


@functools.lru_cache(maxsize=1)
def _installed_svgs() -> _SvgSource:
    try:
        distribution = importlib.metadata.distribution("kanjivg")
    except importlib.metadata.PackageNotFoundError:
        raise DataNotFoundError(
            "the KanjiVG stroke data is not installed", hint="pip install kanjivg"
        ) from None
    files = sorted(
        str(distribution.locate_file(f)) for f in (distribution.files or []) if _BASE_FILE.match(f.name)
    )
    if not files:
        raise DataNotFoundError(
            f"the installed kanjivg {distribution.version} holds no SVG files",
            hint="pip install --force-reinstall kanjivg",
        )
    return _SvgSource(tuple(files), f"kanjivg=={distribution.version}")


@functools.lru_cache(maxsize=4)
def _catalog(source: _SvgSource) -> dict[str, tuple[_CatalogEntry, ...]]:
    """Which characters form which alphabet, and which alphabets form which split."""
    by_radical: dict[str, list[_CatalogEntry]] = defaultdict(list)
    for svg_path in source.files:
        match = _BASE_FILE.match(Path(svg_path).name)
        if match is None:  # never: a _SvgSource lists only the files _BASE_FILE matches
            continue
        codepoint = int(match.group(1), 16)
        if codepoint not in _CJK_UNIFIED:
            continue
        entry = _read_catalog_entry(svg_path, codepoint)
        if entry is not None and entry.stroke_count <= MAX_STROKES:
            by_radical[entry.alphabet].append(entry)

    # Biggest radicals first; ties by name so the order never depends on file order.
    ranked = sorted(by_radical.items(), key=lambda item: (-len(item[1]), item[0]))[:ALPHABET_COUNT]
    splits: dict[str, list[_CatalogEntry]] = {split: [] for split in SPLITS}
    for rank, (_, entries) in enumerate(ranked):
        simplest = sorted(entries, key=lambda e: (e.stroke_count, e.codepoint))[:CHARACTERS_PER_ALPHABET]
        splits[_SPLIT_PATTERN[rank % len(_SPLIT_PATTERN)]].extend(simplest)
    return {split: tuple(entries) for split, entries in splits.items()}


def _read_catalog_entry(svg_path: str, codepoint: int) -> _CatalogEntry | None:
    """Radical and stroke paths of one file; None for a character without a marked radical."""
    try:
        tree = ElementTree.parse(svg_path)
    except (ElementTree.ParseError, OSError) as error:
        raise UnreadableItemError(f"cannot read this KanjiVG file: {error}", path=svg_path,
                                  hint="reinstall kanjivg or remove the file") from None
    radical = None
    for group in tree.iter(f"{_SVG}g"):
        if _kvg(group, "radical") == "general":
            # 氵 is 水 and 扌 is 手: one alphabet per radical, whatever form it takes.
            radical = _kvg(group, "original") or _kvg(group, "element")
            break
    if radical is None:
        return None
    path_data = tuple(p.get("d", "") for p in tree.iter(f"{_SVG}path"))
    return _CatalogEntry(codepoint, f"radical {radical}", len(path_data), path_data, svg_path)


def _kvg(element: ElementTree.Element, name: str) -> str | None:
    # KanjiVG releases differ in the namespace URI they declare for kvg: attributes.
    for namespace in _KVG_ATTRIBUTES:
        if (value := element.get(namespace + name)) is not None:
            return value
    return None


def _parse_strokes(entry: _CatalogEntry) -> KanjiCharacter:
    try:
        from svg.path import Close, CubicBezier, Line, Move, QuadraticBezier, parse_path
    except ImportError:
        raise DataNotFoundError("the SVG path parser is not installed", hint="pip install svg.path") from None

    nodes: list[complex] = []
    node_stroke: list[int] = []
    segment_nodes: list[list[int]] = []
    stroke = -1
    for d in entry.path_data:
        try:
            path = parse_path(d)
        except Exception as error:  # svg.path raises bare ValueError/IndexError on bad data
            raise UnreadableItemError(f"bad stroke path {d[:40]!r}: {error}", path=entry.svg_path) from None
        for segment in path:
            if isinstance(segment, Move):
                stroke += 1  # every sub-path is jittered as its own stroke
                nodes.append(segment.end)
                node_stroke.append(stroke)
                continue
            if isinstance(segment, (Line, Close)):
                # A straight line is the cubic whose controls sit at its thirds.
                controls = (segment.start + (segment.end - segment.start) / 3,
                            segment.start + 2 * (segment.end - segment.start) / 3)
            elif isinstance(segment, QuadraticBezier):
                controls = (segment.start + 2 / 3 * (segment.control - segment.start),
                            segment.end + 2 / 3 * (segment.control - segment.end))
            elif isinstance(segment, CubicBezier):
                controls = (segment.control1, segment.control2)
            else:
                raise UnreadableItemError(
                    f"unsupported stroke segment {type(segment).__name__}", path=entry.svg_path,
                    hint="KanjiVG strokes are cubic curves; is this a KanjiVG file?",
                )
            first = len(nodes) - 1
            nodes.extend([*controls, segment.end])
            node_stroke.extend([stroke] * 3)
            segment_nodes.append([first, first + 1, first + 2, first + 3])
    if not segment_nodes:
        raise UnreadableItemError("the character has no strokes", path=entry.svg_path)
    points = np.array(nodes, dtype=np.complex128)
    segments = np.array(segment_nodes, dtype=np.int64)
    strokes = np.array(node_stroke, dtype=np.int64)
    return KanjiCharacter(
        codepoint=entry.codepoint,
        alphabet=entry.alphabet,
        stroke_count=entry.stroke_count,
        nodes=np.stack([points.real, points.imag], axis=1),
        node_stroke=strokes,
        segment_nodes=segments,
        segment_stroke=strokes[segments[:, 0]],
    )


# --- rendering -----------------------------------------------------------------------

# Bernstein basis at t in [0, 1): a segment's end is the next segment's start.
_T = np.linspace(0.0, 1.0, _POINTS_PER_SEGMENT, endpoint=False)
_BERNSTEIN = np.stack([(1 - _T) ** 3, 3 * (1 - _T) ** 2 * _T, 3 * (1 - _T) * _T**2, _T**3], axis=1)


def _image_rng(seed: int, codepoint: int, sample_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, codepoint, sample_index])


def _writer(seed: int, sample_index: int) -> _Writer:
    # Stream 0 cannot collide with an image's stream: code points used here are >= 0x4E00.
    rng = np.random.default_rng([seed, 0, sample_index])
    slant = rng.normal(0.0, _WRITER_SLANT)
    stretch = 1.0 + rng.normal(0.0, _WRITER_STRETCH, 2)
    shape = np.array([[stretch[0], slant], [0.0, stretch[1]]])
    return _Writer(shape=shape, pen_width=float(rng.uniform(*_WRITER_PEN)))


def _rotation(angle: np.ndarray | float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)


def _render(character: KanjiCharacter, writer: _Writer, rng: np.random.Generator, size: int) -> np.ndarray:
    nodes, node_stroke = character.nodes, character.node_stroke
    stroke_count = int(node_stroke[-1]) + 1

    # Each stroke turns, stretches and shifts about its own centre, then every control point wobbles.
    centres = np.zeros((stroke_count, 2))
    np.add.at(centres, node_stroke, nodes)
    centres /= np.bincount(node_stroke, minlength=stroke_count)[:, None]
    stroke_maps = _rotation(rng.normal(0.0, _STROKE_TURN, stroke_count)) * (
        1.0 + rng.normal(0.0, _STROKE_STRETCH, (stroke_count, 1, 1))
    )
    stroke_shifts = rng.normal(0.0, _STROKE_SHIFT, (stroke_count, 2))
    offsets = nodes - centres[node_stroke]
    nodes = (
        centres[node_stroke]
        + np.einsum("nij,nj->ni", stroke_maps[node_stroke], offsets)
        + stroke_shifts[node_stroke]
        + rng.normal(0.0, _NODE_JITTER, nodes.shape)
    )

    # The whole character: the writer's slant and proportions, then this sample's tilt, shear and place.
    sample_map = _rotation(rng.normal(0.0, _SAMPLE_TURN)) @ np.array(
        [[1.0 + rng.normal(0.0, _SAMPLE_STRETCH), rng.normal(0.0, _SAMPLE_SHEAR)],
         [0.0, 1.0 + rng.normal(0.0, _SAMPLE_STRETCH)]]
    )
    centre = _KANJIVG_BOX / 2
    nodes = (nodes - centre) @ (sample_map @ writer.shape).T + centre + rng.normal(0.0, _SAMPLE_SHIFT, 2)

    canvas_size = size * _SUPERSAMPLE
    to_canvas = canvas_size * _FILL / _KANJIVG_BOX
    margin = canvas_size * (1 - _FILL) / 2
    points = np.einsum("tk,gkd->gtd", _BERNSTEIN, nodes[character.segment_nodes]) * to_canvas + margin
    segment_ends = nodes[character.segment_nodes[:, 3]] * to_canvas + margin
    pixel_scale = _SUPERSAMPLE * size / 28
    density_thinning = min(1.0, (_DENSE_STROKES / stroke_count) ** 0.5)
    pen_widths = (
        writer.pen_width * density_thinning * pixel_scale
        * (1.0 + rng.normal(0.0, _STROKE_PEN_VARIATION, stroke_count))
    )

    canvas = Image.new("L", (canvas_size, canvas_size), 0)
    draw = ImageDraw.Draw(canvas)
    first_segment = np.searchsorted(character.segment_stroke, np.arange(stroke_count + 1))
    for stroke in range(stroke_count):
        start, stop = first_segment[stroke], first_segment[stroke + 1]
        if start == stop:
            continue
        polyline = np.concatenate([points[start:stop].reshape(-1, 2), segment_ends[stop - 1 : stop]])
        width = max(1, round(pen_widths[stroke]))
        # Plain joints: the curve is sampled densely enough that they do not show, and PIL's
        # rounded joints cost most of the render time. Round dots cover the pen tips and the
        # corners between segments, the only places a sharp turn can happen.
        draw.line(polyline.ravel().tolist(), fill=255, width=width)
        radius = width / 2
        for x, y in (polyline[0], *segment_ends[start:stop]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.uint8)


def _render_block(chosen: list[KanjiCharacter], seed: int, samples: int, size: int) -> np.ndarray:
    """Images ``[len(chosen), samples, size, size]``; the unit of work one process gets."""
    writers = [_writer(seed, j) for j in range(samples)]
    out = np.empty((len(chosen), samples, size, size), dtype=np.uint8)
    for i, character in enumerate(chosen):
        for j, writer in enumerate(writers):
            out[i, j] = _render(character, writer, _image_rng(seed, character.codepoint, j), size)
    return out


def _render_all(
    chosen: list[KanjiCharacter], *, seed: int, samples: int, size: int, workers: int | None, progress: bool
) -> np.ndarray:
    from rich.progress import Progress

    workers = workers or _usable_cores()
    # fork, not spawn: spawned workers re-import the caller's script, which breaks any
    # script without an `if __name__ == "__main__"` guard. The workers only touch numpy
    # and PIL. Where fork is not the safe choice (macOS, Windows) we render serially.
    parallel = (
        workers > 1 and sys.platform == "linux" and len(chosen) * samples >= _PARALLEL_MIN_IMAGES
    )
    block_count = max(1, min(len(chosen), 8 * workers if parallel else 20))
    blocks = [list(b) for b in np.array_split(np.arange(len(chosen)), block_count)]
    results: list[np.ndarray] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"rendering {len(chosen)} kanji x {samples}", total=len(chosen))
        if parallel:
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                futures = [
                    pool.submit(_render_block, [chosen[i] for i in block], seed, samples, size) for block in blocks
                ]
                for block, future in zip(blocks, futures):
                    results.append(future.result())
                    bar.advance(task, len(block))
        else:
            for block in blocks:
                results.append(_render_block([chosen[i] for i in block], seed, samples, size))
                bar.advance(task, len(block))
    return np.concatenate(results).reshape(-1, size, size)


# --- choosing, caching, packaging --------------------------------------------------------


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on, not the machine's
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _subsample(entries: list[_CatalogEntry], max_classes: int | None) -> list[_CatalogEntry]:
    """The first ``max_classes`` characters taken round-robin over alphabets, kept in split order.

    Round-robin so that a small subset still spans many alphabets.
    """
    if max_classes is None or max_classes >= len(entries):
        return entries
    rank_in_alphabet: dict[str, int] = defaultdict(int)
    alphabet_order = {a: i for i, a in enumerate(dict.fromkeys(e.alphabet for e in entries))}
    keys = []
    for position, entry in enumerate(entries):
        keys.append((rank_in_alphabet[entry.alphabet], alphabet_order[entry.alphabet], position))
        rank_in_alphabet[entry.alphabet] += 1
    kept = sorted(key[2] for key in sorted(keys)[:max_classes])
    return [entries[i] for i in kept]


def _read_cache(cache_file: Path) -> dict[str, np.ndarray] | None:
    if not cache_file.exists():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as stored:
            return {name: stored[name] for name in ("images", "codepoints", "alphabets")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # a damaged cache is rebuilt, not reported


def _write_cache(cache_file: Path, arrays: dict[str, np.ndarray]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(
        cache_file,
        lambda file: np.savez_compressed(
            file, images=arrays["images"], codepoints=arrays["codepoints"], alphabets=arrays["alphabets"]
        ),
    )


def _as_dataset(arrays: dict[str, np.ndarray], *, split: str) -> LabeledDataset:
    images, codepoints = arrays["images"], arrays["codepoints"]
    samples = len(images) // max(1, len(codepoints))
    return LabeledDataset(
        name=f"kanji-{split}",
        modality="image",
        items=images,
        labels=np.repeat(np.arange(len(codepoints)), samples),
        class_names=[f"U+{int(cp):04X} {chr(int(cp))}" for cp in codepoints],
        uris=[f"kanji:{split}/U+{int(cp):04X}/{j}" for cp in codepoints for j in range(samples)],
        groups=[str(a) for a in arrays["alphabets"]],
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise BadInputError(f"kanji has no split {split!r}", hint=f"choose one of {', '.join(SPLITS)}")

