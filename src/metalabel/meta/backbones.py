"""Backbones: feature extractors the meta-learners wrap, and a registry to rebuild them.

Every backbone here is a plain ``nn.Module`` mapping a batch ``[n, ...]`` to
features ``[n, out_features]``; the learners work with any such module. Build them
with :func:`build_backbone` (or construct the classes directly) so a checkpoint can
record ``{"name", "kwargs"}`` and rebuild the same network; register your own with
:func:`register_backbone`.

``channels_last=True`` stores convolution weights in channels-last memory format.
The CPU convolution then runs channels-last whatever the input's layout (and BN,
ReLU and pooling keep it), which measured 1.5-2x faster for Conv-4 on 28x28 images
here. Inputs are not converted: ``torch.func.vmap`` cannot query memory formats.
Use it for ProtoNet and first-order methods only: bench/meta_speed.py measured
second-order MAML gradients through channels-last convolutions off by 1e-3 (one
inner step) to 0.15 (five steps) relative to float64, against 1e-5 for NCHW.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metalabel.errors import BadInputError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a module class or factory buildable (and checkpointable) by ``name``."""

    def register(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = factory
        return factory

    return register


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered backbone; the module remembers ``name`` and ``kwargs`` for checkpoints.

    ``kwargs`` must be JSON-serialisable (numbers, strings, lists) to be saved.
    """
    if name not in _REGISTRY:
        raise BadInputError(
            f"unknown backbone {name!r}",
            hint=f"use one of {available_backbones()} or register yours with register_backbone",
        )
    module = _REGISTRY[name](**kwargs)
    # torch types Module.__setattr__ values as Tensor | Module; any other value is stored as a plain attribute
    module.metalabel_spec = {"name": name, "kwargs": dict(kwargs)}  # type: ignore[assignment]
    return module


def backbone_spec(module: nn.Module) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` that :func:`build_backbone` needs to rebuild ``module``."""
    spec = getattr(module, "metalabel_spec", None)
    if spec is None:
        raise BadInputError(
            f"the backbone {type(module).__name__} does not say how to rebuild it",
            hint="build it with metalabel.meta.build_backbone(name, **kwargs) "
            "after register_backbone(name) on its class or factory",
        )
    return spec


def output_width(backbone: nn.Module, feature_dim: int | None) -> int:
    """``feature_dim`` if given, else the backbone's ``out_features``; a clear error when neither says."""
    width = feature_dim if feature_dim is not None else getattr(backbone, "out_features", None)
    if width is None:
        raise BadInputError(f"cannot tell how many features {type(backbone).__name__} outputs",
                            hint="pass feature_dim=<size of the backbone's output>")
    return int(width)


def linear_head(in_features: int, ways: int, *, zero_init: bool = False) -> nn.Linear:
    """The N-way classifier that MAML/Reptile adapt on top of a backbone.

    ``zero_init`` starts every class with the same logit, so the meta-learned
    initialisation cannot prefer one episode-local label over another.
    """
    head = nn.Linear(in_features, ways)
    if zero_init:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return head


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, *, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


@register_backbone("conv4")
class Conv4(nn.Module):
    """The standard few-shot ConvNet: ``depth`` x [conv3x3, BN, ReLU, maxpool2], flattened.

    With the defaults (28x28 grayscale, 64 channels, depth 4) the output is 64-d; on
    84x84 images it is 64*5*5 = 1600-d. ``batch_norm=False`` drops the BN layers
    (the conv then keeps its bias).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        hidden: int = 64,
        depth: int = 4,
        image_size: int = 28,
        batch_norm: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(depth):
            layers += [*_conv_bn(channels, hidden, 3, batch_norm=batch_norm), nn.ReLU(), nn.MaxPool2d(2)]
            channels, size = hidden, size // 2
        if size < 1:
            raise BadInputError(
                f"Conv4 with depth {depth} halves {image_size}px images to nothing",
                hint="use a smaller depth or larger images",
            )
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out_features = hidden * size * size
        self.metalabel_spec = {
            "name": "conv4",
            "kwargs": dict(in_channels=in_channels, hidden=hidden, depth=depth, image_size=image_size,
                           batch_norm=batch_norm, channels_last=channels_last),
        }
        if channels_last:
            # torch's overloads of Module.to omit memory_format, which it accepts at runtime
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class _ResidualBlock(nn.Module):
    """Three conv-BN-LeakyReLU layers with a 1x1 projected shortcut, then maxpool2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, out_channels, 3, batch_norm=True), nn.LeakyReLU(0.1),
            *_conv_bn(out_channels, out_channels, 3, batch_norm=True), nn.LeakyReLU(0.1),
            *_conv_bn(out_channels, out_channels, 3, batch_norm=True),
        )
        self.shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, batch_norm=True))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x) + self.shortcut(x))


@register_backbone("resnet12")
class ResNet12(nn.Module):
    """ResNet-12 as in the few-shot literature: four residual blocks, global average pool.

    Meant for larger images (84x84 and up); the output has ``channels[-1]`` features.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 160, 320, 640),
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        widths = (in_channels, *channels)
        self.blocks = nn.Sequential(*(_ResidualBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels[-1]
        self.metalabel_spec = {
            "name": "resnet12",
            "kwargs": dict(in_channels=in_channels, channels=list(channels), channels_last=channels_last),
        }
        if channels_last:
            # torch's overloads of Module.to omit memory_format, which it accepts at runtime
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.blocks(x))


@register_backbone("identity")
def identity() -> nn.Module:
    """No learned embedding: a ProtoNet over it is the nearest class mean in the input (encoder) space."""
    return nn.Identity()


@register_backbone("mlp")
class MLP(nn.Module):
    """Linear-ReLU layers over fixed feature vectors (e.g. frozen text or image encoder embeddings)."""

    def __init__(self, *, in_features: int, hidden: Sequence[int] = (256,), out_features: int = 128) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        widths = (in_features, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(widths[-1], out_features))
        self.out_features = out_features
        self.metalabel_spec = {
            "name": "mlp",
            "kwargs": dict(in_features=in_features, hidden=list(hidden), out_features=out_features),
        }

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
