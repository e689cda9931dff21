"""The kanji source and the sample grid, on a handful of characters so they stay fast."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metalabel.datasets
from metalabel.data.dataset import LabeledDataset
from metalabel.data.grid import save_grid
from metalabel.data.sources import kanji
from metalabel.errors import BadInputError, DataNotFoundError


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("METALABEL_CACHE", str(cache))
    return cache


def small(**options) -> LabeledDataset:
    options = {"split": "evaluation", "max_classes": 6, "samples_per_class": 8, "progress": False} | options
    return kanji.load(**options)


def test_shape_names_groups_and_uris() -> None:
    data = small()
    assert data.items.shape == (48, 28, 28) and data.items.dtype == np.uint8
    assert data.num_classes == 6 and len(data.groups) == 6
    assert all(re.fullmatch(r"U\+[0-9A-F]{4,5} .", name) for name in data.class_names)
    assert data.uris[9] == f"kanji:evaluation/{data.class_names[1].split()[0]}/1"
    assert list(np.bincount(data.labels)) == [8] * 6
    # White strokes on black: mostly background, with some full-intensity ink.
    assert np.median(data.items) == 0 and data.items.max() == 255


def test_same_seed_same_bytes_different_seed_different(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = small(seed=3).items
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "other-cache"))  # render again, not a cache hit
    assert np.array_equal(small(seed=3).items, first)
    assert not np.array_equal(small(seed=4).items, first)


def test_an_image_does_not_depend_on_which_others_are_rendered() -> None:
    data = small(max_classes=3)
    character = kanji.characters("evaluation")[0]
    assert data.class_names[0].startswith(f"U+{character.codepoint:04X}")
    alone = kanji.render(character, seed=0, sample_index=5)
    assert np.array_equal(alone, data.items[5])


def test_parallel_rendering_gives_the_serial_bytes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kanji, "_PARALLEL_MIN_IMAGES", 0)
    serial = small(workers=1).items
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "other-cache"))
    assert np.array_equal(small(workers=2).items, serial)


def test_samples_vary_but_stay_closer_to_their_own_class() -> None:
    data = small(max_classes=10, samples_per_class=10)
    pixels = data.items.reshape(len(data), -1).astype(np.float64) / 255
    members = data.class_indices()
    assert all(len(np.unique(pixels[idx], axis=0)) == len(idx) for idx in members)

    # Leave-one-out nearest class mean: far above the 10% of guessing.
    sums = np.stack([pixels[idx].sum(0) for idx in members])
    correct = 0
    for i, label in enumerate(data.labels):
        means = sums / 10
        means[label] = (sums[label] - pixels[i]) / 9
        correct += int(np.argmin(((means - pixels[i]) ** 2).sum(1)) == label)
    assert correct / len(data) > 0.5


def test_splits_are_disjoint_and_fixed_whatever_max_classes() -> None:
    background = kanji.characters("background")
    evaluation = kanji.characters("evaluation")
    assert not {c.codepoint for c in background} & {c.codepoint for c in evaluation}
    assert not {c.alphabet for c in background} & {c.alphabet for c in evaluation}
    assert 1400 < len(background) + len(evaluation) < 1800
    assert 0.5 < len(background) / (len(background) + len(evaluation)) < 0.7
    assert all(c.stroke_count <= kanji.MAX_STROKES for c in background + evaluation)

    subset = small(split="background", max_classes=7)
    names = {f"U+{c.codepoint:04X} {chr(c.codepoint)}" for c in background}
    assert len(subset.class_names) == 7 and set(subset.class_names) <= names
    assert len(set(subset.groups)) == 7  # round-robin over alphabets: a small subset spans many


def test_second_load_hits_the_cache(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    first = small()
    assert len(list((private_cache / "kanji").glob("*.npz"))) == 1
    assert not list((private_cache / "kanji").glob(".*.tmp*"))  # no temporary left

    def no_rendering(*args, **kwargs):
        raise AssertionError("a cached build was rendered again")

    monkeypatch.setattr(kanji, "_render_all", no_rendering)
    second = small()
    assert np.array_equal(second.items, first.items)
    assert second.class_names == first.class_names and second.groups == first.groups


def test_a_damaged_cache_file_is_rebuilt(private_cache: Path) -> None:
    first = small()
    (cache_file,) = (private_cache / "kanji").glob("*.npz")
    cache_file.write_bytes(b"not a zip file")
    assert np.array_equal(small().items, first.items)


def test_the_registry_loads_kanji() -> None:
    data = metalabel.datasets.load("kanji", split="evaluation", max_classes=5, progress=False)
    assert data.items.shape == (100, 28, 28)
    assert data.name == "kanji-evaluation" and data.num_classes == 5


def test_other_sizes_render_at_that_size() -> None:
    assert small(max_classes=2, size=40).items.shape == (16, 40, 40)


def test_missing_kanjivg_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    kanji._installed_svgs.cache_clear()
    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(DataNotFoundError, match="pip install kanjivg"):
        small()
    kanji._installed_svgs.cache_clear()


def test_a_folder_of_kanjivg_files_can_stand_in_for_the_package(tmp_path: Path) -> None:
    folder = tmp_path / "kanjivg"
    folder.mkdir()
    installed = kanji.characters("background")[:3] + kanji.characters("evaluation")[:3]
    package_files = {Path(f).name: f for f in kanji._installed_svgs().files}
    for character in installed:
        shutil.copy(package_files[f"{character.codepoint:05x}.svg"], folder)
    data = small(split="background", root=folder)
    assert data.num_classes >= 1 and data.items.shape[1:] == (28, 28)

    with pytest.raises(DataNotFoundError, match="no KanjiVG base SVG files"):
        small(root=tmp_path / "cache")
    with pytest.raises(DataNotFoundError):
        small(root=tmp_path / "nowhere")


@pytest.mark.parametrize(
    "options",
    [
        {"split": "train"},
        {"samples_per_class": 0},
        {"max_classes": 0},
        {"size": 4},
        {"seed": -1},
        {"workers": 0},
    ],
)
def test_bad_options_get_a_typed_error(options: dict) -> None:
    with pytest.raises(BadInputError):
        small(**options)


def test_grid_png_has_one_row_per_class_and_one_column_per_sample(tmp_path: Path) -> None:
    data = small()
    path = save_grid(data, tmp_path / "grids" / "kanji.png", classes=4, per_class=5, scale=2)
    with Image.open(path) as image:
        assert image.size == (5 * 28 * 2, 4 * 28 * 2) and image.mode == "L"

    # Fewer classes than asked: one row each. Fewer samples than asked: the row is padded.
    path = save_grid(data, tmp_path / "all.png", classes=50, per_class=10, scale=1)
    with Image.open(path) as image:
        assert image.size == (10 * 28, 6 * 28)
        assert np.asarray(image)[:, 8 * 28 :].max() == 0


def test_grid_draws_rgb_and_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = LabeledDataset(
        name="colours", modality="image", items=rng.integers(0, 256, (12, 9, 7, 3), dtype=np.uint8),
        labels=np.repeat(np.arange(3), 4), class_names=["a", "b", "c"], uris=[f"x/{i}" for i in range(12)],
    )
    with Image.open(save_grid(rgb, tmp_path / "rgb.png", classes=3, per_class=4, scale=3)) as image:
        assert image.size == (4 * 7 * 3, 3 * 9 * 3) and image.mode == "RGB"

    text = LabeledDataset(
        name="words", modality="text", items=["a", "b"], labels=[0, 1], class_names=["x", "y"],
        uris=["0", "1"],
    )
    with pytest.raises(BadInputError, match="not images"):
        save_grid(text, tmp_path / "text.png")
