"""Conditional WGAN-GP: the gradient penalty is what it says, it learns its classes, and it is reproducible."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import metalabel as ml
from metalabel.errors import BadInputError, DataNotFoundError, EmptyClassError
from metalabel.generate.gan import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    FeatureCritic,
    generate_features,
    gradient_penalty,
    load_gan,
    sample_gan_images,
    save_gan,
    train_feature_gan,
    train_image_gan,
)

QUICK = {"steps": 300, "hidden": 64, "noise_dim": 16}


def test_gradient_penalty_matches_a_finite_difference_estimate_of_the_critics_input_gradient():
    torch.manual_seed(0)
    critic = FeatureCritic(3, 2, hidden=5, generator=torch.Generator().manual_seed(3)).double()
    real, fake = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0]), 2).double()
    mix = torch.rand(4, 1, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, one_hot, mix)

    between = mix * real + (1 - mix) * fake
    step = 1e-6
    with torch.no_grad():
        gradient = torch.stack([(critic(between + step * e, one_hot) - critic(between - step * e, one_hot)) / (2 * step)
                                for e in torch.eye(3, dtype=torch.float64)], dim=1)
    expected = ((gradient.norm(dim=1) - 1) ** 2).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    assert penalty.item() > 1e-3  # not a trivially zero penalty: the norms are away from 1
    penalty.backward()  # built with create_graph, so it trains the critic's weights (not the hidden bias: the
    # input gradient of a piecewise-linear net does not move with it)
    assert critic.hidden.weight.grad.abs().sum() > 0 and critic.out.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def digits():
    """Three digit classes of scikit-learn's bundled 8x8 digits, as 64-d features, and a GAN of them."""
    x, y = load_digits(return_X_y=True)
    rows = np.flatnonzero(np.isin(y, (0, 1, 7)))
    features, labels = x[rows].astype(np.float32), np.searchsorted([0, 1, 7], y[rows])
    return features, labels, train_feature_gan(features, labels, classes=3, seed=0, **QUICK)


def test_generated_features_are_of_the_class_asked_for(digits):
    features, labels, trained = digits
    assert np.isfinite(trained.critic_losses).all() and np.isfinite(trained.generator_losses).all()
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    wanted = np.repeat(np.arange(3), 40)
    made = generate_features(trained, wanted, seed=1)
    assert made.shape == (120, 64) and made.dtype == np.float32
    predicted = ((made[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == wanted).mean() >= 0.9
    # and they vary within a class rather than collapsing onto one point
    assert made[wanted == 0].std(0).mean() > 0.2 * features[labels == 0].std(0).mean()


def test_same_seed_same_gan_and_rows_and_a_save_round_trip(digits, tmp_path):
    features, labels, trained = digits
    again = train_feature_gan(features, labels, classes=3, seed=0, **{**QUICK, "steps": 3})
    assert again.version == train_feature_gan(features, labels, classes=3, seed=0, **{**QUICK, "steps": 3}).version
    assert again.version != trained.version
    wanted = np.array([0, 1, 2, 2])
    first = generate_features(trained, wanted, seed=5)
    np.testing.assert_array_equal(first, generate_features(trained, wanted, seed=5))

    folder = save_gan(trained, tmp_path / "gan")
    loaded = load_gan(folder)
    assert loaded.version == trained.version and loaded.config == trained.config
    np.testing.assert_array_equal(generate_features(loaded, wanted, seed=5), first)
    assert json.loads((folder / CONFIG_FILE).read_text())["generator"] == "conditional-wgan-gp"

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors["model.generator.out.bias"] += 1
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(BadInputError, match="do not match the recorded version"):
        load_gan(folder)


def test_bad_input_names_the_row_or_class(digits):
    features, labels, _ = digits
    bad = labels.copy()
    bad[7] = 3
    with pytest.raises(BadInputError, match="outside 0..2") as error:
        train_feature_gan(features, bad, classes=3, steps=1)
    assert "row 7" in str(error.value)
    with pytest.raises(EmptyClassError):
        train_feature_gan(features, labels, classes=4, steps=1)
    with pytest.raises(BadInputError, match="one class id per row"):
        train_feature_gan(features, labels[:-1], classes=3, steps=1)
    with pytest.raises(BadInputError, match="penalty"):
        train_feature_gan(features, labels, classes=3, steps=1, penalty=0)


def test_image_gan_draws_fashion_mnist_classes_a_classifier_of_real_images_recognizes():
    try:
        dataset = ml.datasets.load("fashion-mnist", split="test", download_missing=False)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)")
    classes = (1, 7)  # trouser, sneaker
    rows = np.concatenate([np.flatnonzero(dataset.labels == c)[:200] for c in classes])
    images, labels = dataset.items[rows], np.searchsorted(classes, dataset.labels[rows])
    trained = train_image_gan(images, labels, classes=2, seed=0)
    samples = sample_gan_images(trained, np.repeat([0, 1], 20), seed=2)
    assert samples.shape == (40, 28, 28) and samples.dtype == np.uint8
    means = np.stack([images[labels == c].reshape(-1, 784).mean(0) for c in range(2)])
    predicted = ((samples.reshape(40, 784)[:, None].astype(np.float64) - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == np.repeat([0, 1], 20)).mean() >= 0.75  # 300 MLP steps: 85% measured, chance 50%
    with pytest.raises(BadInputError, match="28x28"):
        train_image_gan(images[:, :14], labels, classes=2, steps=1)
