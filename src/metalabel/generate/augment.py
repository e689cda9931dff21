"""Augmentation as a policy: named operations, each applied with a probability at a strength.

A policy is plain data (a JSON round trip and a stable version hash), so every augmented
item can name the policy that made it, and ``policy_search`` can learn a policy from
held-out feedback instead of a person setting one by hand.

Image operations run kornia's functional kernels on float tensors ``[N, C, H, W]`` in
``[0, 1]``; every random parameter is drawn from a ``torch.Generator`` seeded by the caller,
so a seed reproduces the output exactly and the global random state is never touched.
Embedding operations act on feature vectors ``[N, D]`` from any encoder (text included)
and draw from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from metalabel.data.arrays import check_matrix
from metalabel.errors import BadInputError, MissingDependencyError, check_whole_number

if TYPE_CHECKING:  # torch loads on first use, so importing a policy stays quick
    import torch
    from torch import Tensor

IMAGE_OPERATIONS: tuple[str, ...] = (
    "rotate", "scale", "translate", "crop", "hflip", "vflip", "elastic", "noise", "contrast", "brightness",
)
EMBEDDING_OPERATIONS: tuple[str, ...] = ("gaussian_noise", "dropout", "mix_within_class", "class_direction")
OPERATIONS_BY_MODALITY: dict[str, tuple[str, ...]] = {"image": IMAGE_OPERATIONS, "embedding": EMBEDDING_OPERATIONS}
FLIP_OPERATIONS: frozenset[str] = frozenset({"hflip", "vflip"})
"""Operations whose magnitude means nothing: a flip is all or nothing."""

# What magnitude 1 means for each operation; magnitude m scales these linearly.
MAX_ROTATION_DEGREES = 30.0
MAX_SCALE_CHANGE = 0.3  # zoom factor in [1 - 0.3 m, 1 + 0.3 m]
MAX_TRANSLATION = 0.2  # fraction of the side
MAX_CROP_AREA_LOSS = 0.5  # the crop keeps between 1 - 0.5 m and all of the area
MAX_ELASTIC_DISPLACEMENT = 0.08  # root-mean-square pixel shift, as a fraction of the side
MAX_NOISE_STD = 0.2  # in pixel units of [0, 1]
MAX_CONTRAST_CHANGE = 0.5  # factor in [1 - 0.5 m, 1 + 0.5 m] around the image mean
MAX_BRIGHTNESS_SHIFT = 0.3  # added to every pixel
MAX_DROPOUT_RATE = 0.5
MAX_MIX_WEIGHT = 0.5  # lambda ~ U(0, 0.5 m): the item stays nearer to itself than to its partner

@dataclass(frozen=True)
class Operation:
    """One augmentation step: apply ``name`` to each item with ``probability`` at ``magnitude``.

    ``magnitude`` is normalized to ``[0, 1]`` and mapped per operation to a physical range
    (the ``MAX_*`` constants of this module); flips ignore it.
    """

    name: str
    probability: float
    magnitude: float

    def __post_init__(self) -> None:
        known = IMAGE_OPERATIONS + EMBEDDING_OPERATIONS
        if self.name not in known:
            raise BadInputError(f"unknown augmentation operation {self.name!r}", hint=f"use one of: {', '.join(known)}")
        for field_name in ("probability", "magnitude"):
            value = getattr(self, field_name)
            # NaN fails the range test too
            if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
                raise BadInputError(
                    f"{self.name}: {field_name} must be a number in [0, 1], got {value!r}",
                    hint=f"give the {field_name} as a fraction, e.g. 0.5",
                )
            object.__setattr__(self, field_name, float(value))  # 1 and 1.0 must give one policy version

    def describe(self, *, probability: bool = True) -> str:
        """``rotate p=0.5 m=0.3``, or ``rotate m=0.3`` without the probability; flips have no magnitude."""
        text = self.name + (f" p={self.probability:g}" if probability else "")
        return text if self.name in FLIP_OPERATIONS else f"{text} m={self.magnitude:g}"


@dataclass(frozen=True)
class AugmentationPolicy:
    """Operations applied in order to every item; the empty policy is the identity.

    ``no_flip_classes`` are classes a flip would turn into something else (digits,
    characters); flips skip their items.
    """

    modality: str
    operations: tuple[Operation, ...] = ()
    no_flip_classes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.modality not in OPERATIONS_BY_MODALITY:
            raise BadInputError(
                f"unknown augmentation modality {self.modality!r}",
                hint=f"use one of: {', '.join(OPERATIONS_BY_MODALITY)} (text uses 'embedding')",
            )
        allowed = OPERATIONS_BY_MODALITY[self.modality]
        operations = tuple(self.operations)
        seen: set[str] = set()
        for operation in operations:
            if not isinstance(operation, Operation):
                raise BadInputError(
                    f"a policy holds Operation objects, got {operation!r}",
                    hint="build each step as Operation(name, probability, magnitude)",
                )
            if operation.name not in allowed:
                raise BadInputError(
                    f"{operation.name!r} is not an {self.modality} operation",
                    hint=f"{self.modality} policies use: {', '.join(allowed)}",
                )
            if operation.name in seen:
                raise BadInputError(
                    f"{operation.name!r} appears twice in the policy",
                    hint="keep one; with_operation replaces an operation of the same name",
                )
            seen.add(operation.name)
        classes = self.no_flip_classes
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable) or not all(
            isinstance(cls, Integral) and not isinstance(cls, bool) for cls in classes
        ):
            raise BadInputError(
                f"no_flip_classes must be class indices (integers), got {self.no_flip_classes!r}",
                hint="pass e.g. frozenset({0, 3})",
            )
        object.__setattr__(self, "operations", operations)
        object.__setattr__(self, "no_flip_classes", frozenset(int(cls) for cls in classes))

    @property
    def version(self) -> str:
        """Short sha256 of the canonical JSON: the same policy always gives the same version."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "operations": [asdict(operation) for operation in self.operations],
            "no_flip_classes": sorted(self.no_flip_classes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentationPolicy:
        """The policy ``to_dict`` wrote; unknown or missing keys are refused rather than guessed."""
        if not isinstance(data, Mapping):
            raise BadInputError(
                f"a policy is a mapping, got {type(data).__name__}", hint="pass what to_dict() returned"
            )
        keys = {"modality", "operations", "no_flip_classes"}
        if "modality" not in data or set(data) - keys:
            raise BadInputError(
                f"a policy needs 'modality' and may hold only {sorted(keys)}; got keys {sorted(data)}",
                hint="pass what to_dict() returned",
            )
        operations = []
        for number, step in enumerate(data.get("operations", [])):
            if not isinstance(step, Mapping) or set(step) != {"name", "probability", "magnitude"}:
                raise BadInputError(
                    f"operation {number} must have exactly name, probability and magnitude, got {step!r}",
                    hint="pass what to_dict() returned",
                )
            operations.append(Operation(step["name"], step["probability"], step["magnitude"]))
        return cls(data["modality"], tuple(operations), frozenset(data.get("no_flip_classes", ())))

    def with_operation(self, operation: Operation) -> AugmentationPolicy:
        """This policy plus ``operation``; one of the same name is replaced where it stands."""
        names = [step.name for step in self.operations]
        if operation.name in names:
            steps = list(self.operations)
            steps[names.index(operation.name)] = operation
            return AugmentationPolicy(self.modality, tuple(steps), self.no_flip_classes)
        return AugmentationPolicy(self.modality, self.operations + (operation,), self.no_flip_classes)

    def without(self, name: str) -> AugmentationPolicy:
        """This policy less the operation called ``name``."""
        if name not in {step.name for step in self.operations}:
            raise BadInputError(
                f"the policy has no {name!r} operation",
                hint=f"it has: {', '.join(step.name for step in self.operations) or 'none'}",
            )
        steps = tuple(step for step in self.operations if step.name != name)
        return AugmentationPolicy(self.modality, steps, self.no_flip_classes)

    def describe(self) -> str:
        """One line for a person: ``rotate p=0.5 m=0.3, noise p=0.3 m=0.2`` or ``no augmentation``."""
        if not self.operations:
            return "no augmentation"
        line = ", ".join(operation.describe() for operation in self.operations)
        if self.no_flip_classes and any(step.name in FLIP_OPERATIONS for step in self.operations):
            line += f" (no flips for classes {', '.join(map(str, sorted(self.no_flip_classes)))})"
        return line


@dataclass(frozen=True, eq=False)
class Augmented:
    """New rows made from existing ones: ``parents[i]`` is the source row of ``x[i]``.

    ``policy_version`` and ``seed`` are the provenance: together they remake ``x`` exactly.
    """

    x: Any  # the kind expand was given: ndarray [M, D], float tensor/ndarray [M, C, H, W], or uint8 images
    y: np.ndarray
    parents: np.ndarray
    policy_version: str
    seed: int


def augment_images(images: Tensor, labels: Tensor | np.ndarray, policy: AugmentationPolicy, *, seed: int) -> Tensor:
    """Apply an image policy to float images ``[N, C, H, W]`` in ``[0, 1]``; returns a new tensor.

    Each operation is applied to each item with its probability; the same seed gives
    bit-identical output.
    """
    import torch

    _check_modality(policy, "image")
    check_whole_number("seed", seed, minimum=0)
    _check_float_images(images)
    label_array = _label_array(labels, len(images))
    return _augment_image_batch(images, label_array, policy, torch.Generator().manual_seed(seed))


def augment_embeddings(x: np.ndarray, y: np.ndarray, policy: AugmentationPolicy, *, seed: int) -> np.ndarray:
    """Apply an embedding policy to feature vectors ``[N, D]``; returns a new array.

    Data statistics (per-dimension spread, same-class partners, within-class directions)
    come from ``x`` itself, so pass the whole labeled set, not one item at a time.
    """
    _check_modality(policy, "embedding")
    check_whole_number("seed", seed, minimum=0)
    features = _embedding_matrix(x)
    label_array = _label_array(y, len(features))
    return _augment_embedding_batch(features, label_array, policy, np.random.default_rng(seed))


def expand(x: Any, y: Any, policy: AugmentationPolicy, *, copies: int, seed: int) -> Augmented:
    """``copies`` augmented rows per item, with the parent row of each.

    ``x`` is an array ``[N, D]`` for an embedding policy; for an image policy a float
    tensor or array ``[N, C, H, W]`` in ``[0, 1]``, or uint8 images ``[N, H, W]`` /
    ``[N, H, W, C]`` as data sets hold them. The result has the kind ``x`` had. New rows
    come copy by copy: row ``c * N + i`` is copy ``c`` of item ``i``.
    """
    _check_policy(policy)
    check_whole_number("copies", copies, minimum=0)
    check_whole_number("seed", seed, minimum=0)
    if policy.modality == "embedding":
        features = _embedding_matrix(x)
        labels = _label_array(y, len(features))
        rng = np.random.default_rng(seed)
        blocks = [_augment_embedding_batch(features, labels, policy, rng) for _ in range(copies)]
        new_x = np.concatenate(blocks) if blocks else features[:0].copy()
    else:
        import torch

        images, back_to_input_kind = _as_float_images(x)
        labels = _label_array(y, len(images))
        generator = torch.Generator().manual_seed(seed)
        image_blocks = [_augment_image_batch(images, labels, policy, generator) for _ in range(copies)]
        new_x = back_to_input_kind(torch.cat(image_blocks) if image_blocks else images[:0])
    parents = np.tile(np.arange(len(labels), dtype=np.int64), copies)
    return Augmented(x=new_x, y=labels[parents], parents=parents, policy_version=policy.version, seed=seed)


# ---------------------------------------------------------------- checks and conversions


def _check_policy(policy: object) -> None:
    if not isinstance(policy, AugmentationPolicy):
        raise BadInputError(
            f"expected an AugmentationPolicy, got {type(policy).__name__}",
            hint="build one, or load a saved one with AugmentationPolicy.from_dict",
        )


def _check_modality(policy: AugmentationPolicy, modality: str) -> None:
    _check_policy(policy)
    if policy.modality != modality:
        other = "augment_images" if policy.modality == "image" else "augment_embeddings"
        raise BadInputError(
            f"this is an {policy.modality} policy, not an {modality} one", hint=f"use {other} or expand"
        )


def _is_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported already
    return torch is not None and isinstance(value, torch.Tensor)


def _label_array(labels: Any, count: int) -> np.ndarray:
    array = labels.detach().cpu().numpy() if _is_tensor(labels) else np.asarray(labels)
    if array.ndim != 1 or len(array) != count:
        raise BadInputError(
            f"expected one label per item ({count}), got labels of shape {array.shape}",
            hint="pass a 1-D array of class indices",
        )
    if count and not np.issubdtype(array.dtype, np.integer):
        raise BadInputError(
            f"labels must be integer class indices, got dtype {array.dtype}", hint="map names to indices"
        )
    return array.astype(np.int64, copy=False)


def _embedding_matrix(x: Any) -> np.ndarray:
    if _is_tensor(x):
        raise BadInputError("embedding augmentation takes a numpy array", hint="pass tensor.detach().cpu().numpy()")
    return check_matrix(x, name="embeddings", min_rows=0, hint="drop or re-encode those items",
                        shape_hint="encode the items first (metalabel.data.encoders)")


def _check_float_images(images: Any) -> None:
    if not _is_tensor(images) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise BadInputError(
            f"images must be a float tensor [N, C, H, W], got {shape}",
            hint="convert uint8 images with torch.from_numpy(a).float() / 255, or use expand, which takes them",
        )
    if not bool(((images >= 0) & (images <= 1)).all()):  # NaN fails both tests too
        raise BadInputError("image values must lie in [0, 1]", hint="divide 0-255 pixel values by 255")


def _as_float_images(x: Any):
    """``x`` as a float tensor ``[N, C, H, W]``, and the function that turns a result back into x's kind."""
    import torch

    if _is_tensor(x):
        _check_float_images(x)
        return x, lambda images: images
    array = np.asarray(x)
    if array.dtype == np.uint8 and array.ndim in (3, 4):
        channels_last = array.ndim == 4
        images = torch.from_numpy(array).float() / 255.0
        images = images.permute(0, 3, 1, 2) if channels_last else images.unsqueeze(1)

        def to_uint8(result: Tensor) -> np.ndarray:
            pixels = (result * 255.0).round().clamp(0, 255).to(torch.uint8)
            pixels = pixels.permute(0, 2, 3, 1) if channels_last else pixels.squeeze(1)
            return pixels.contiguous().numpy()

        return images, to_uint8
    if np.issubdtype(array.dtype, np.floating) and array.ndim == 4:
        images = torch.from_numpy(np.ascontiguousarray(array))
        _check_float_images(images)
        return images, lambda result: result.numpy()
    raise BadInputError(
        f"images must be uint8 [N, H, W] / [N, H, W, C] or float [N, C, H, W] in [0, 1]; "
        f"got {array.dtype} {array.shape}",
        hint="for features use an embedding policy",
    )


def _import_kornia():
    try:
        import kornia.enhance
        import kornia.geometry.transform
    except ImportError as error:
        raise MissingDependencyError("image augmentation needs kornia: pip install 'metalabel[vision]'") from error
    return kornia


# ---------------------------------------------------------------- image operations


def _augment_image_batch(
    images: Tensor, labels: np.ndarray, policy: AugmentationPolicy, generator: torch.Generator
) -> Tensor:
    import torch

    if not policy.operations:
        return images.clone()
    kornia = _import_kornia()
    flippable = torch.from_numpy(~np.isin(labels, sorted(policy.no_flip_classes)))
    result = images
    for operation in policy.operations:
        chosen = torch.rand(len(images), generator=generator) < operation.probability
        if operation.name in FLIP_OPERATIONS:
            chosen &= flippable
        rows = chosen.nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        transform = _IMAGE_TRANSFORMS[operation.name]
        changed = transform(kornia, result[rows.to(images.device)], operation.magnitude, generator)
        result = result.index_copy(0, rows.to(images.device), changed)
    return result if result is not images else images.clone()


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float, like: Tensor) -> Tensor:
    """Draw on the CPU generator, then move: the same seed gives the same numbers on any device."""
    import torch

    draws = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (low + (high - low) * draws).to(device=like.device, dtype=like.dtype)


def _warp(kornia, batch: Tensor, *, angle: Tensor | None = None, zoom: Tensor | None = None,
          shift: Tensor | None = None) -> Tensor:
    """One affine resampling about the image centre; edges repeat so no black border appears."""
    import torch

    count, _, height, width = batch.shape
    device, dtype = batch.device, batch.dtype
    center = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=device, dtype=dtype).expand(count, 2)
    angle = torch.zeros(count, device=device, dtype=dtype) if angle is None else angle
    zoom = torch.ones(count, device=device, dtype=dtype) if zoom is None else zoom
    shift = torch.zeros(count, 2, device=device, dtype=dtype) if shift is None else shift
    matrix = kornia.geometry.transform.get_affine_matrix2d(shift, center, zoom[:, None].expand(count, 2), angle)
    return kornia.geometry.transform.warp_affine(batch, matrix[:, :2], (height, width), padding_mode="border")


def _rotate(kornia, batch, magnitude, generator):
    limit = MAX_ROTATION_DEGREES * magnitude
    return _warp(kornia, batch, angle=_uniform(generator, (len(batch),), -limit, limit, batch))


def _scale(kornia, batch, magnitude, generator):
    change = MAX_SCALE_CHANGE * magnitude
    return _warp(kornia, batch, zoom=_uniform(generator, (len(batch),), 1 - change, 1 + change, batch))


def _translate(kornia, batch, magnitude, generator):
    import torch

    sides = torch.tensor([batch.shape[-1], batch.shape[-2]], device=batch.device, dtype=batch.dtype)
    limit = MAX_TRANSLATION * magnitude
    return _warp(kornia, batch, shift=_uniform(generator, (len(batch), 2), -limit, limit, batch) * sides)


def _crop(kornia, batch, magnitude, generator):
    """Random-resized-crop style: pick a box of a random area and place, blow it up to the full size."""
    import torch

    area = _uniform(generator, (len(batch),), 1 - MAX_CROP_AREA_LOSS * magnitude, 1.0, batch)
    box_side = area.sqrt()
    half_room = torch.tensor([batch.shape[-1] - 1, batch.shape[-2] - 1], device=batch.device, dtype=batch.dtype) / 2
    box_offset = _uniform(generator, (len(batch), 2), -1.0, 1.0, batch) * (1 - box_side[:, None]) * half_room
    zoom = 1 / box_side
    # the box centre (image centre + offset) must land on the image centre after zooming by `zoom`
    return _warp(kornia, batch, zoom=zoom, shift=-zoom[:, None] * box_offset)


def _hflip(kornia, batch, magnitude, generator):
    return batch.flip(-1)


def _vflip(kornia, batch, magnitude, generator):
    return batch.flip(-2)


def _elastic(kornia, batch, magnitude, generator):
    import torch

    count, _, height, width = batch.shape
    sigma = max(1.0, min(height, width) / 7)  # smooth enough to bend strokes, not to shred them
    kernel = 2 * math.ceil(3 * sigma) + 1
    noise = torch.randn((count, 2, height, width), generator=generator).to(device=batch.device, dtype=batch.dtype)
    # Unit-variance noise smoothed by a normalized Gaussian has RMS 1 / (2 sqrt(pi) sigma); the sampling
    # grid spans 2 units per side, so this alpha gives an RMS shift of MAX_ELASTIC_DISPLACEMENT * m of the side.
    alpha = 2 * MAX_ELASTIC_DISPLACEMENT * magnitude * 2 * math.sqrt(math.pi) * sigma
    return kornia.geometry.transform.elastic_transform2d(
        batch, noise, (kernel, kernel), (sigma, sigma), (alpha, alpha), padding_mode="border"
    )


def _noise(kornia, batch, magnitude, generator):
    import torch

    noise = torch.randn(batch.shape, generator=generator).to(device=batch.device, dtype=batch.dtype)
    return (batch + MAX_NOISE_STD * magnitude * noise).clamp(0.0, 1.0)


def _contrast(kornia, batch, magnitude, generator):
    change = MAX_CONTRAST_CHANGE * magnitude
    factor = _uniform(generator, (len(batch),), 1 - change, 1 + change, batch)
    return kornia.enhance.adjust_contrast_with_mean_subtraction(batch, factor)


def _brightness(kornia, batch, magnitude, generator):
    limit = MAX_BRIGHTNESS_SHIFT * magnitude
    return kornia.enhance.adjust_brightness(batch, _uniform(generator, (len(batch),), -limit, limit, batch))


_IMAGE_TRANSFORMS = {
    "rotate": _rotate, "scale": _scale, "translate": _translate, "crop": _crop, "hflip": _hflip,
    "vflip": _vflip, "elastic": _elastic, "noise": _noise, "contrast": _contrast, "brightness": _brightness,
}


# ---------------------------------------------------------------- embedding operations


class _ClassLayout:
    """Where each item's class-mates are, computed once per batch."""

    def __init__(self, labels: np.ndarray) -> None:
        _, self.class_of, self.sizes = np.unique(labels, return_inverse=True, return_counts=True)
        self.members = np.argsort(self.class_of, kind="stable")  # rows grouped by class
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.rank = np.empty(len(labels), dtype=np.int64)  # position of each row inside its class group
        self.rank[self.members] = np.arange(len(labels)) - self.starts[self.class_of[self.members]]

    def rows_of(self, class_number: int) -> np.ndarray:
        start = self.starts[class_number]
        return self.members[start : start + self.sizes[class_number]]


def _augment_embedding_batch(
    x: np.ndarray, y: np.ndarray, policy: AugmentationPolicy, rng: np.random.Generator
) -> np.ndarray:
    result = x.copy()
    if not policy.operations or len(x) == 0:
        return result
    layout = _ClassLayout(y)
    for operation in policy.operations:
        rows = np.flatnonzero(rng.random(len(x)) < operation.probability)
        if len(rows):
            _EMBEDDING_TRANSFORMS[operation.name](result, rows, x, layout, operation.magnitude, rng)
    return result


def _gaussian_noise(result, rows, x, layout, magnitude, rng) -> None:
    spread = x.std(axis=0)  # per dimension, so noise respects each feature's scale
    result[rows] += rng.standard_normal((len(rows), x.shape[1])) * (magnitude * spread)


def _dropout(result, rows, x, layout, magnitude, rng) -> None:
    rate = MAX_DROPOUT_RATE * magnitude
    kept = rng.random((len(rows), x.shape[1])) >= rate
    result[rows] *= kept / (1 - rate)  # rescale so each feature keeps its expected value


def _mix_within_class(result, rows, x, layout, magnitude, rng) -> None:
    rows = rows[layout.sizes[layout.class_of[rows]] >= 2]  # an only example has nobody to mix with
    if not len(rows):
        return
    classes = layout.class_of[rows]
    # a uniform pick among the other members: draw from n - 1 places and skip over the item itself
    pick = rng.integers(0, layout.sizes[classes] - 1)
    pick += pick >= layout.rank[rows]
    partners = layout.members[layout.starts[classes] + pick]
    weight = rng.uniform(0.0, MAX_MIX_WEIGHT * magnitude, size=len(rows))[:, None]
    result[rows] = (1 - weight) * result[rows] + weight * x[partners]


def _class_direction(result, rows, x, layout, magnitude, rng) -> None:
    """Gaussian noise with the class's own within-class covariance (its principal directions, each at
    the spread the class shows there). A class with one example borrows the pooled within-class
    directions of the classes that have several, since it shows no spread of its own."""
    residuals = {}
    for class_number in np.flatnonzero(layout.sizes >= 2):
        members = x[layout.rows_of(class_number)]
        residuals[class_number] = members - members.mean(axis=0)
    if not residuals:
        return
    pooled = np.concatenate(list(residuals.values()))
    pooled_dof = len(pooled) - len(residuals)
    classes = layout.class_of[rows]
    for class_number in np.unique(classes):
        if class_number in residuals:
            centred, dof = residuals[class_number], layout.sizes[class_number] - 1
        else:
            centred, dof = pooled, pooled_dof
        _, singular_values, directions = np.linalg.svd(centred, full_matrices=False)
        stds = singular_values / np.sqrt(dof)
        targets = rows[classes == class_number]
        draws = rng.standard_normal((len(targets), len(stds)))
        result[targets] += magnitude * (draws * stds) @ directions


_EMBEDDING_TRANSFORMS = {
    "gaussian_noise": _gaussian_noise,
    "dropout": _dropout,
    "mix_within_class": _mix_within_class,
    "class_direction": _class_direction,
}
