"""Augmentation policies: validation, provenance, reproducibility, and what each operation really does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from metalabel.errors import BadInputError, MissingDependencyError
from metalabel.generate import (
    EMBEDDING_OPERATIONS,
    IMAGE_OPERATIONS,
    AugmentationPolicy,
    Operation,
    augment_embeddings,
    augment_images,
    expand,
)


def image_policy(*operations: Operation, no_flip: frozenset[int] = frozenset()) -> AugmentationPolicy:
    return AugmentationPolicy("image", operations, no_flip)


def embedding_policy(*operations: Operation) -> AugmentationPolicy:
    return AugmentationPolicy("embedding", operations)


def bar_images(count: int, size: int = 33) -> torch.Tensor:
    """A horizontal bar through the centre on black: its orientation is easy to measure."""
    images = torch.zeros(count, 1, size, size)
    middle = size // 2
    images[:, :, middle - 1 : middle + 2, 6 : size - 6] = 1.0
    return images


def ramp_images(count: int, size: int = 24) -> torch.Tensor:
    """Pixel value = x position in [0, 1], so a pixel's value says where it was sampled from."""
    return torch.linspace(0, 1, size).expand(count, 1, size, size).clone()


def orientation_degrees(images: torch.Tensor) -> np.ndarray:
    """Principal-axis angle of each image's mass, from its second central moments."""
    mass = images[:, 0].double()
    height, width = mass.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height).double(), torch.arange(width).double(), indexing="ij")
    total = mass.sum((-2, -1))
    mean_x, mean_y = (mass * xs).sum((-2, -1)) / total, (mass * ys).sum((-2, -1)) / total
    dx, dy = xs - mean_x[:, None, None], ys - mean_y[:, None, None]
    mu20, mu02, mu11 = [(mass * term).sum((-2, -1)) / total for term in (dx * dx, dy * dy, dx * dy)]
    return np.degrees(0.5 * np.arctan2(2 * mu11.numpy(), (mu20 - mu02).numpy()))


# ---------------------------------------------------------------- policy as data


def test_operation_rejects_unknown_names_and_out_of_range_numbers():
    with pytest.raises(BadInputError, match="unknown augmentation operation 'spin'.*rotate.*class_direction"):
        Operation("spin", 0.5, 0.5)
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(BadInputError, match="probability must be a number in \\[0, 1\\]"):
            Operation("rotate", bad, 0.5)
        with pytest.raises(BadInputError, match="magnitude must be a number in \\[0, 1\\]"):
            Operation("rotate", 0.5, bad)


def test_policy_rejects_operations_of_another_modality_and_duplicates():
    with pytest.raises(BadInputError, match="'rotate' is not an embedding operation.*gaussian_noise"):
        embedding_policy(Operation("rotate", 0.5, 0.5))
    with pytest.raises(BadInputError, match="appears twice"):
        image_policy(Operation("rotate", 0.5, 0.5), Operation("rotate", 0.2, 0.1))
    with pytest.raises(BadInputError, match="unknown augmentation modality 'text'.*embedding"):
        AugmentationPolicy("text")
    with pytest.raises(BadInputError, match="no_flip_classes must be class indices"):
        AugmentationPolicy("image", (), frozenset({"seven"}))


def test_policy_round_trips_through_json_and_its_version_follows_its_content():
    policy = image_policy(Operation("rotate", 0.5, 0.3), Operation("hflip", 0.5, 0.0), no_flip={3, 1})
    restored = AugmentationPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert restored == policy
    assert restored.version == policy.version
    assert len(policy.version) == 12 and int(policy.version, 16) >= 0
    same = image_policy(Operation("rotate", 0.5, 0.3), Operation("hflip", 0.5, 0), no_flip={1, 3})
    assert same.version == policy.version
    assert image_policy(Operation("rotate", 1, 0)).version == image_policy(Operation("rotate", 1.0, 0.0)).version
    changed = [
        image_policy(Operation("rotate", 0.5, 0.4), Operation("hflip", 0.5, 0.0), no_flip={1, 3}),
        image_policy(Operation("hflip", 0.5, 0.0), Operation("rotate", 0.5, 0.3), no_flip={1, 3}),  # order matters
        image_policy(Operation("rotate", 0.5, 0.3), Operation("hflip", 0.5, 0.0), no_flip={1}),
    ]
    assert len({policy.version, *(other.version for other in changed)}) == 4


def test_from_dict_refuses_unknown_or_missing_keys():
    with pytest.raises(BadInputError, match="may hold only"):
        AugmentationPolicy.from_dict({"modality": "image", "ops": []})
    with pytest.raises(BadInputError, match="exactly name, probability and magnitude"):
        AugmentationPolicy.from_dict({"modality": "image", "operations": [{"name": "rotate", "probability": 0.5}]})


def test_with_operation_replaces_in_place_and_without_removes():
    policy = image_policy(Operation("rotate", 0.5, 0.3), Operation("noise", 0.3, 0.2))
    assert policy.describe() == "rotate p=0.5 m=0.3, noise p=0.3 m=0.2"
    replaced = policy.with_operation(Operation("rotate", 1.0, 0.1))
    assert replaced.describe() == "rotate p=1 m=0.1, noise p=0.3 m=0.2"
    assert policy.with_operation(Operation("hflip", 0.5, 0.5)).describe().endswith("hflip p=0.5")
    assert policy.without("rotate").describe() == "noise p=0.3 m=0.2"
    assert policy.without("rotate").without("noise").describe() == "no augmentation"
    with pytest.raises(BadInputError, match="no 'crop' operation.*rotate, noise"):
        policy.without("crop")
    flips = image_policy(Operation("hflip", 0.5, 0.0), no_flip={7, 1})
    assert flips.describe() == "hflip p=0.5 (no flips for classes 1, 7)"


def test_importing_generate_loads_neither_kornia_nor_torch():
    code = "import sys, metalabel.generate; print('kornia' in sys.modules, 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_missing_kornia_says_how_to_install_it(monkeypatch):
    for module in [name for name in sys.modules if name == "kornia" or name.startswith("kornia.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "kornia", None)  # makes `import kornia` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'metalabel\[vision\]'"):
        augment_images(bar_images(2), [0, 1], image_policy(Operation("rotate", 1.0, 0.5)), seed=0)


# ---------------------------------------------------------------- images


def every_image_operation() -> AugmentationPolicy:
    return image_policy(*(Operation(name, 0.7, 0.8) for name in IMAGE_OPERATIONS))


def test_same_seed_gives_identical_images_and_another_seed_differs():
    images = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    labels = np.arange(6)
    first = augment_images(images, labels, every_image_operation(), seed=11)
    again = augment_images(images, labels, every_image_operation(), seed=11)
    other = augment_images(images, labels, every_image_operation(), seed=12)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == images.shape and first.dtype == images.dtype


def test_image_augmentation_leaves_global_random_state_alone():
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    augment_images(images, np.zeros(4, int), every_image_operation(), seed=3)
    expand(np.random.default_rng(0).normal(size=(5, 3)), [0, 0, 1, 1, 1],
           embedding_policy(*(Operation(name, 1.0, 0.5) for name in EMBEDDING_OPERATIONS)), copies=2, seed=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


@pytest.mark.parametrize("name", IMAGE_OPERATIONS)
def test_each_image_operation_changes_images_and_keeps_range_and_input(name):
    images = torch.rand(4, 3, 18, 18, generator=torch.Generator().manual_seed(1))
    kept = images.clone()
    out = augment_images(images, np.arange(4), image_policy(Operation(name, 1.0, 1.0)), seed=0)
    assert torch.equal(images, kept)  # the input is never written to
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert (out - images).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every item changed
    assert torch.equal(augment_images(images, np.arange(4), image_policy(Operation(name, 0.0, 1.0)), seed=0), images)


def test_empty_policy_is_the_identity_on_a_fresh_tensor():
    images = torch.rand(3, 1, 8, 8)
    out = augment_images(images, [0, 1, 2], image_policy(), seed=0)
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


def test_rotate_turns_within_30_degrees_times_magnitude():
    images = bar_images(64)
    for magnitude, limit in ((1.0, 30.0), (0.5, 15.0)):
        policy = image_policy(Operation("rotate", 1.0, magnitude))
        angles = orientation_degrees(augment_images(images, np.zeros(64, int), policy, seed=4))
        assert np.abs(angles).max() <= limit + 1.0
        assert np.abs(angles).max() >= 0.8 * limit  # the range is used, not only small turns
        assert (angles > 0).any() and (angles < 0).any()
    assert np.allclose(orientation_degrees(images), 0.0, atol=1e-6)


def test_translate_moves_a_dot_at_most_a_fifth_of_the_side():
    size = 41
    dots = torch.zeros(32, 1, size, size)
    dots[:, :, size // 2, size // 2] = 1.0
    out = augment_images(dots, np.zeros(32, int), image_policy(Operation("translate", 1.0, 1.0)), seed=2)
    peak = out.flatten(1).argmax(dim=1).numpy()
    shift = np.stack([peak % size - size // 2, peak // size - size // 2], axis=1)
    assert np.abs(shift).max() <= 0.2 * size + 1
    assert np.abs(shift).max() >= 0.1 * size


def test_crop_zooms_into_a_box_anywhere_inside_the_image():
    ramp = ramp_images(200)
    out = augment_images(ramp, np.zeros(200, int), image_policy(Operation("crop", 1.0, 1.0)), seed=5)
    # the sampled box spans sqrt(area) of the width, area in [0.5, 1]: a ramp of that slope, inside [0, 1]
    span = (out[..., -1] - out[..., 0]).numpy()
    assert np.all(span >= np.sqrt(0.5) - 1e-4) and np.all(span <= 1 + 1e-5)
    assert span.min() < 0.85
    steps = out[..., 1:] - out[..., :-1]
    assert bool((steps > 0).all())  # still increasing: nothing flipped
    # evenly: every sample fell inside the image, none on the repeated border
    torch.testing.assert_close(steps, steps.mean(dim=-1, keepdim=True).expand_as(steps), atol=1e-5, rtol=0)
    # the box's place is uniform over the room it has: some small boxes sit near either side
    left, room = out[:, 0, 0, 0].numpy(), 1 - span[:, 0, 0]
    share_on_left = (left / room)[room > 0.2]
    assert share_on_left.min() < 0.08 and share_on_left.max() > 0.92


def test_scale_changes_size_within_30_percent():
    ramp = ramp_images(32, size=25)
    out = augment_images(ramp, np.zeros(32, int), image_policy(Operation("scale", 1.0, 1.0)), seed=6)
    middle = out[:, 0, 12, 8:17]  # central pixels stay inside the image for any zoom in range
    slope = ((middle[:, -1] - middle[:, 0]) / (ramp[0, 0, 12, 16] - ramp[0, 0, 12, 8])).numpy()
    zoom = 1 / slope
    assert np.all(zoom >= 0.7 - 1e-3) and np.all(zoom <= 1.3 + 1e-3)
    assert zoom.min() < 0.85 and zoom.max() > 1.15


def test_elastic_displaces_about_eight_percent_of_the_side_at_full_magnitude():
    size = 28
    ramp = ramp_images(16, size=size)
    out = augment_images(ramp, np.zeros(16, int), image_policy(Operation("elastic", 1.0, 1.0)), seed=0)
    shift_pixels = ((out - ramp) * (size - 1))[..., 4:-4, 4:-4]  # away from the edges, where values clamp
    rms = float(shift_pixels.pow(2).mean().sqrt())
    assert 0.6 * 0.08 * size < rms < 1.5 * 0.08 * size


def test_noise_std_follows_magnitude():
    grey = torch.full((8, 1, 32, 32), 0.5)
    for magnitude in (0.25, 0.5):
        out = augment_images(grey, np.zeros(8, int), image_policy(Operation("noise", 1.0, magnitude)), seed=0)
        assert float((out - grey).std()) == pytest.approx(0.2 * magnitude, rel=0.05)


def test_contrast_scales_spread_about_the_mean_and_brightness_shifts():
    images = 0.4 + 0.2 * torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    out = augment_images(images, np.zeros(16, int), image_policy(Operation("contrast", 1.0, 1.0)), seed=1)
    factor = (out.std(dim=(1, 2, 3)) / images.std(dim=(1, 2, 3))).numpy()
    assert np.all(factor >= 0.5 - 1e-4) and np.all(factor <= 1.5 + 1e-4) and factor.max() - factor.min() > 0.3
    assert torch.allclose(out.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=1e-5)
    out = augment_images(images, np.zeros(16, int), image_policy(Operation("brightness", 1.0, 0.5)), seed=1)
    shift = out - images
    assert torch.allclose(shift, shift.mean(dim=(1, 2, 3), keepdim=True), atol=1e-6)  # one shift per image
    assert shift.abs().max() <= 0.15 + 1e-6


def test_flips_skip_no_flip_classes():
    images = torch.rand(40, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    labels = np.arange(40) % 4
    policy = image_policy(Operation("hflip", 1.0, 0.0), Operation("vflip", 0.5, 0.0), no_flip={1, 3})
    out = augment_images(images, torch.from_numpy(labels), policy, seed=0)
    protected = np.isin(labels, [1, 3])
    assert torch.equal(out[protected], images[protected])
    free = out[~protected]
    source = images[~protected].flip(-1)
    flipped_both = torch.isclose(free, source.flip(-2)).flatten(1).all(1)
    flipped_once = torch.isclose(free, source).flatten(1).all(1)
    assert bool((flipped_both | flipped_once).all()) and 0 < int(flipped_both.sum()) < len(free)


def test_bad_images_are_refused_with_a_hint():
    with pytest.raises(BadInputError, match="float tensor \\[N, C, H, W\\].*255"):
        augment_images(torch.zeros(2, 8, 8, dtype=torch.uint8), [0, 1], image_policy(), seed=0)
    with pytest.raises(BadInputError, match="lie in \\[0, 1\\].*255"):
        augment_images(torch.full((2, 1, 8, 8), 3.0), [0, 1], image_policy(), seed=0)
    with pytest.raises(BadInputError, match="one label per item"):
        augment_images(torch.zeros(2, 1, 8, 8), [0, 1, 2], image_policy(), seed=0)
    with pytest.raises(BadInputError, match="image policy, not an embedding"):
        augment_embeddings(np.zeros((2, 3)), [0, 1], image_policy(), seed=0)
    with pytest.raises(BadInputError, match="seed must be a whole number"):
        augment_images(torch.zeros(2, 1, 8, 8), [0, 1], image_policy(), seed=-1)


# ---------------------------------------------------------------- embeddings


def spread_features(rows: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)) * np.array([0.5, 1.0, 2.0, 4.0]) + 3.0
    return x, np.zeros(rows, dtype=np.int64)


def test_gaussian_noise_std_is_magnitude_times_each_dimensions_std():
    x, y = spread_features()
    out = augment_embeddings(x, y, embedding_policy(Operation("gaussian_noise", 1.0, 0.3)), seed=0)
    np.testing.assert_allclose((out - x).std(axis=0), 0.3 * x.std(axis=0), rtol=0.05)
    assert out.dtype == x.dtype


def test_dropout_zeroes_half_at_full_magnitude_and_rescales_the_rest():
    x, y = spread_features()
    out = augment_embeddings(x, y, embedding_policy(Operation("dropout", 1.0, 1.0)), seed=0)
    dropped = out == 0
    assert dropped.mean() == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(out[~dropped], 2 * x[~dropped])


def test_probability_sets_the_share_of_items_changed():
    x, y = spread_features()
    out = augment_embeddings(x, y, embedding_policy(Operation("gaussian_noise", 0.3, 0.5)), seed=0)
    assert (out != x).any(axis=1).mean() == pytest.approx(0.3, abs=0.03)


def test_mix_within_class_stays_on_the_segment_to_a_class_mate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2, 3])  # pairs, so each item has exactly one possible partner; class 3 has none
    partner = np.array([1, 0, 3, 2, 5, 4, -1])
    for seed in range(5):
        out = augment_embeddings(x, y, embedding_policy(Operation("mix_within_class", 1.0, 0.6)), seed=seed)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out[6], x[6])
        step = out[:6] - x[:6]
        toward = x[partner[:6]] - x[:6]
        weight = (step * toward).sum(1) / (toward * toward).sum(1)
        np.testing.assert_allclose(step, weight[:, None] * toward, atol=1e-5)  # on the line to the partner
        assert np.all(weight > 0) and np.all(weight <= 0.3 + 1e-6) and weight.max() > 0.05


def test_class_direction_moves_along_the_classs_own_spread():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 10))
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2])  # class 2 has one example: it borrows the pooled directions
    out = augment_embeddings(x, y, embedding_policy(Operation("class_direction", 1.0, 0.7)), seed=0)
    for rows in ([0, 1, 2], [3, 4, 5, 6]):
        span = x[rows] - x[rows].mean(axis=0)
        coefficients, *_ = np.linalg.lstsq(span.T, (out[rows] - x[rows]).T, rcond=None)
        np.testing.assert_allclose(span.T @ coefficients, (out[rows] - x[rows]).T, atol=1e-9)
    pooled = np.concatenate([x[:3] - x[:3].mean(0), x[3:7] - x[3:7].mean(0)])
    coefficients, *_ = np.linalg.lstsq(pooled.T, out[7] - x[7], rcond=None)
    np.testing.assert_allclose(pooled.T @ coefficients, out[7] - x[7], atol=1e-9)
    assert np.all(np.abs(out - x).sum(axis=1) > 1e-3)
    same = augment_embeddings(x, y, embedding_policy(Operation("class_direction", 1.0, 0.0)), seed=0)
    np.testing.assert_array_equal(same, x)


def test_class_direction_noise_has_the_classs_covariance_times_magnitude_squared():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3)) @ np.array([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.1]])
    result = expand(x, np.zeros(40, dtype=np.int64), embedding_policy(Operation("class_direction", 1.0, 0.5)),
                    copies=100, seed=0)
    noise = result.x - x[result.parents]
    np.testing.assert_allclose(np.cov(noise.T), 0.25 * np.cov(x.T), atol=0.1 * 0.25 * np.cov(x.T).max())


def test_embeddings_are_checked():
    with pytest.raises(BadInputError, match="embeddings must be a numeric 2-D array"):
        augment_embeddings(np.zeros(5), np.zeros(5, int), embedding_policy(), seed=0)
    with pytest.raises(BadInputError, match="row 1: NaN or infinity in embeddings"):
        augment_embeddings(np.array([[0.0, 1.0], [np.nan, 0.0]]), [0, 1], embedding_policy(), seed=0)
    with pytest.raises(BadInputError, match="integer class indices"):
        augment_embeddings(np.zeros((2, 2)), [0.5, 1.0], embedding_policy(), seed=0)


# ---------------------------------------------------------------- expand


def test_expand_embeddings_records_parents_labels_and_policy_version():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 1])
    policy = embedding_policy(Operation("mix_within_class", 1.0, 0.5), Operation("gaussian_noise", 0.5, 0.2))
    result = expand(x, y, policy, copies=3, seed=9)
    np.testing.assert_array_equal(result.parents, np.tile(np.arange(5), 3))
    assert result.parents.dtype == np.int64
    np.testing.assert_array_equal(result.y, y[result.parents])
    assert result.x.shape == (15, 3) and result.x.dtype == np.float32
    assert result.policy_version == policy.version and result.seed == 9
    np.testing.assert_array_equal(expand(x, y, policy, copies=3, seed=9).x, result.x)
    assert not np.array_equal(result.x[:5], result.x[5:10])  # each copy is a fresh draw
    none = expand(x, y, policy, copies=0, seed=9)
    assert none.x.shape == (0, 3) and none.y.shape == (0,) and none.parents.shape == (0,)


def test_expand_images_returns_the_kind_it_was_given_with_parents_aligned():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(6, 7, 7), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    policy = image_policy(Operation("hflip", 1.0, 0.0), no_flip={2})
    result = expand(grey, labels, policy, copies=2, seed=0)
    assert result.x.dtype == np.uint8 and result.x.shape == (12, 7, 7)
    for row, parent in enumerate(result.parents):
        expected = grey[parent] if labels[parent] == 2 else grey[parent][:, ::-1]
        np.testing.assert_array_equal(result.x[row], expected)  # uint8 survives the float round trip exactly

    colour = rng.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    out = expand(colour, [0, 1, 2], image_policy(Operation("noise", 1.0, 0.5)), copies=2, seed=0).x
    assert out.dtype == np.uint8 and out.shape == (6, 5, 6, 3)
    as_array = rng.random((3, 2, 5, 5)).astype(np.float32)
    out = expand(as_array, [0, 1, 2], image_policy(Operation("rotate", 1.0, 0.5)), copies=1, seed=0).x
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 2, 5, 5)
    as_tensor = torch.from_numpy(as_array)
    out = expand(as_tensor, [0, 1, 2], image_policy(Operation("rotate", 1.0, 0.5)), copies=0, seed=0).x
    assert isinstance(out, torch.Tensor) and out.shape == (0, 2, 5, 5)


def test_expand_refuses_what_it_cannot_use():
    with pytest.raises(BadInputError, match="copies must be a whole number"):
        expand(np.zeros((2, 2)), [0, 1], embedding_policy(), copies=True, seed=0)
    with pytest.raises(BadInputError, match="images must be uint8"):
        expand(np.zeros((2, 4)), [0, 1], image_policy(), copies=1, seed=0)
    with pytest.raises(BadInputError, match="takes a numpy array"):
        expand(torch.zeros(2, 2), [0, 1], embedding_policy(), copies=1, seed=0)
    with pytest.raises(BadInputError, match="expected an AugmentationPolicy"):
        expand(np.zeros((2, 2)), [0, 1], {"modality": "embedding"}, copies=1, seed=0)
