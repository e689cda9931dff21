"""The pool's embedding as a Ray dataset: parallel batches on the cluster's workers, one encoder load per worker.

The driver cuts the pool into chunks of ``chunk_size`` items. Each chunk is keyed by its
content like a whole pool is (``embedding_cache_path``), so a chunk embedded once is never
embedded again: not by a rerun, nor by a run killed halfway and started again, nor by a
second project whose pool shares the chunk. The missing chunks become the blocks of a
Ray dataset that ``map_batches`` sends through a pool of actors, each holding the encoder
(weights load once per actor, not once per batch). Ray runs a chunk's read task only as the
actors keep up, and the driver writes each chunk's results in place into the whole pool's
cache file as they come, so beyond the items it was given the driver holds a few chunks at
a time. That file becomes the one ``embed_dataset`` reads once every chunk is in: the
labeling run that follows finds its embeddings there, exactly as if it had made them itself.

The cache lives on the driver's disk; the workers only compute, so they need metalabel
and the encoder's extra installed, not a shared file system. Ray restarts an actor whose
process dies and runs its batch again (Ray Data's actor pools retry by default).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metalabel.data.dataset import LabeledDataset
from metalabel.data.encoders import (
    ChunkedEmbedding,
    EmbeddingsFile,
    Encoder,
    Items,
    check_items,
    embedding_cache_path,
    encoder_for,
    open_embeddings_folder,
    progress_bar,
    read_cached_embeddings,
    save_embeddings,
)
from metalabel.data.mapped import in_cache
from metalabel.data.sources.user import DEFAULT_CHUNK_SIZE
from metalabel.errors import BadInputError, MissingDependencyError
from metalabel.files import write_atomically

LOCAL = "local"
"""The address that starts a Ray cluster on this machine for the run (and stops it after)."""

BLOCK_ROWS = 256
"""Items per actor call: chunks are the unit of caching, blocks of work. Actors number at most the chunks to embed,
so a pool of one chunk embeds on one actor: two measured no faster on 3,000 images (EfficientNet-Lite0, two
cores: 15-17 s either way), each actor's start outweighing its share."""


@dataclass(frozen=True)
class RayEmbedding(ChunkedEmbedding):
    """What :func:`embed_on_ray` did: where the embeddings are (``load()``, memory-mapped), how many chunks were
    found in the cache, and how much was made on the cluster."""

    workers: int
    """Actors the cluster ran the encoder on (0 when everything was cached and Ray was not started)."""


@dataclass(frozen=True)
class _Chunk:
    start: int
    stop: int
    path: Path


def embed_on_ray(dataset: LabeledDataset, encoder: str | Encoder, *, address: str = LOCAL,
                 workers: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: bool = True) -> RayEmbedding:
    """Embed ``dataset``'s items on a Ray cluster into the cache ``embed_dataset`` reads.

    ``address``: ``"local"`` starts a cluster on this machine with ``workers`` CPUs (default:
    all) and stops it afterwards; any other value is an existing cluster's address (``"auto"``,
    ``"ray://host:10001"``, ``"host:6379"``). If Ray is already initialized in this process
    (a notebook, a test), that cluster is used as it is. ``workers`` caps the actors (default:
    the cluster's CPUs). The driver holds the items it was given, and a few chunks on their way.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise BadInputError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BadInputError(f"workers must be a whole number >= 1, got {workers!r}")
    began = time.perf_counter()
    encoder = encoder_for(dataset, encoder)
    check_items(dataset, encoder)  # here, naming the item: on a worker it would surface as Ray's failure
    shape = (len(dataset), encoder.dim)
    path = embedding_cache_path(dataset.items, encoder)
    chunks = [_Chunk(start, min(start + chunk_size, len(dataset)),
                     embedding_cache_path(dataset.items[start:start + chunk_size], encoder))
              for start in range(0, len(dataset), chunk_size)]
    if read_cached_embeddings(path, expected_shape=shape, mmap=True) is not None:
        return RayEmbedding(path=path, items=len(dataset), chunks=len(chunks), chunks_cached=len(chunks),
                            seconds=time.perf_counter() - began, workers=0)
    cached = {chunk.start: embeddings for chunk in chunks if (embeddings := read_cached_embeddings(
        chunk.path, expected_shape=(chunk.stop - chunk.start, encoder.dim), mmap=True)) is not None}
    missing = [chunk for chunk in chunks if chunk.start not in cached]
    open_embeddings_folder(path.parent)
    used_workers = 0

    def assemble(file: Path) -> None:
        nonlocal used_workers
        with EmbeddingsFile(file, encoder.dim, rows=len(dataset)) as out:
            for start, embeddings in cached.items():
                out.write(start, embeddings)
            if missing:
                with _connected(address, workers) as cluster_workers:
                    used_workers = min(cluster_workers, len(missing))  # one chunk is one actor's work at a time
                    _embed_missing(dataset, encoder, missing, out, workers=used_workers, progress=progress)

    write_atomically(path, assemble)
    return RayEmbedding(path=path, items=len(dataset), chunks=len(chunks), chunks_cached=len(cached),
                        seconds=time.perf_counter() - began, workers=used_workers)


def _embed_missing(dataset: LabeledDataset, encoder: Encoder, missing: list[_Chunk], out: EmbeddingsFile, *,
                   workers: int, progress: bool) -> None:
    """Run ``missing`` through the actor pool; each chunk goes to the pool's file and its own as soon as it is whole."""
    import ray.data

    context = ray.data.DataContext.get_current()
    with _quiet_logger("ray.data"):
        context.enable_progress_bars = False  # the driver draws one bar of its own, in items
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    # read tasks are cheap (a chunk's items unpickled): one at a time, in one process, takes no CPU an actor
    # needs (without a limit Ray starts a process per task); one block per chunk is read, Ray splits none
    blocks = ray.data.read_datasource(_pool_chunks(dataset, missing), num_cpus=0, concurrency=1,
                                      override_num_blocks=len(missing))
    embedded = blocks.map_batches(
        _EncodeBatches, fn_constructor_args=(encoder,), batch_size=None, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers), num_cpus=1,
    )
    chunk_of = {chunk.start: chunk for chunk in missing}
    starts = np.array(sorted(chunk_of))
    arriving: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # chunk start -> (its rows so far, which have come)
    with _quiet_logger("ray.data"), warnings.catch_warnings(), progress_bar(
            progress, f"embedding with {encoder.name} on Ray", total=sum(c.stop - c.start for c in missing)) as advance:
        # a read task carries its chunk's items by design (a few MB): Ray's advice against that is not for users
        warnings.filterwarnings("ignore", message="The serialized size of your read function")
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            index, rows = batch["index"], batch["embedding"]
            owners = starts[np.searchsorted(starts, index, side="right") - 1]
            # a block may reach the driver split or merged: gather rows per chunk, write a chunk once every row of
            # it has come (counted by position: a row that came twice never stands in for one that did not)
            for start in np.unique(owners).tolist():
                if start not in chunk_of:  # written already: rows that came again bring nothing new
                    continue
                chunk = chunk_of[start]
                mine = owners == start
                buffer, come = arriving.get(start) or (np.empty((chunk.stop - start, encoder.dim), np.float32),
                                                       np.zeros(chunk.stop - start, bool))
                buffer[index[mine] - start] = rows[mine]
                come[index[mine] - start] = True
                if not come.all():
                    arriving[start] = (buffer, come)
                    continue
                arriving.pop(start, None)
                out.write(start, buffer)
                with in_cache(chunk.path.parent, "embeddings"):
                    write_atomically(chunk.path, functools.partial(save_embeddings, embeddings=buffer))
                chunk_of.pop(start)
            advance(len(index))
    if chunk_of:  # Ray reported success but rows are missing: never write a cache file with holes
        first = min(chunk_of)
        raise RuntimeError(f"the Ray job returned {len(chunk_of)} chunks incomplete (first at item {first}); "
                           "nothing was cached for them, run again to retry")


def _arrow_chunk(items: Items, start: int, text: bool) -> Any:
    """One chunk as an Arrow table: the items' positions in the pool, and the items."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    column = (pa.array(list(items), type=pa.large_string()) if text
              else ArrowTensorArray.from_numpy(np.ascontiguousarray(items)))
    return pa.table({"index": pa.array(np.arange(start, start + len(items), dtype=np.int64)), "item": column})


def _pool_chunks(dataset: LabeledDataset, chunks: list[_Chunk]) -> Any:
    """The ``chunks`` of ``dataset`` as a Ray ``Datasource``, its class made here so this module imports no Ray."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class PoolChunks(Datasource):
        """The missing chunks as read tasks: each carries its own items, and becomes a block only when Ray runs it.

        Ray submits read tasks as the actors keep up, so at most a few chunks are on their way at
        a time, instead of the whole pool copied into the object store up front.
        """

        def __init__(self, dataset: LabeledDataset, chunks: list[_Chunk]) -> None:
            self.dataset, self.chunks = dataset, chunks

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            text = self.dataset.modality == "text"
            return [ReadTask(_chunk_reader(self.dataset.items[chunk.start:chunk.stop], chunk.start, text),
                             BlockMetadata(num_rows=chunk.stop - chunk.start, size_bytes=None, exec_stats=None))
                    for chunk in self.chunks]

    return PoolChunks(dataset, chunks)


def _chunk_reader(items: Items, start: int, text: bool) -> Callable[[], list[Any]]:
    """A chunk's read task (a named function: Ray names its tasks after it), in blocks of ``BLOCK_ROWS`` items."""
    def read_chunk() -> list[Any]:
        return [_arrow_chunk(items[offset:offset + BLOCK_ROWS], start + offset, text)
                for offset in range(0, len(items), BLOCK_ROWS)]

    return read_chunk


class _EncodeBatches:
    """A Ray Data actor: the encoder built once when the actor starts, then one call per block of items."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items: Items = batch["item"]
        if self.encoder.modality == "text":
            items = [str(text) for text in batch["item"]]
        elif not batch["item"].flags.writeable:  # a zero-copy view of the object store; torch warns on read-only
            items = batch["item"].copy()
        return {"index": batch["index"], "embedding": self.encoder.encode(items, progress=False)}


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Nothing from logger ``name`` for the block but the critical, then its level as it was.

    Ray Data logs a failed task's traceback before it raises; the exception reaches the caller anyway.
    """
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


_START_A_CLUSTER = "start one with `ray start --head` and pass its address, or use --ray local"


def _check_answers(address: str) -> None:
    """Refuse a cluster's ``host:port`` (or ``ray://host:port``) at once if nothing takes a connection there.

    Ray itself retries such an address for minutes, logging every try; ``auto`` and the forms this does not
    read are left to Ray.
    """
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
            pass
    except OSError as error:  # refused, no route, a name that does not resolve, a timeout
        raise ConnectionError(f"nothing answers there ({error.strerror or error})") from error


@contextlib.contextmanager
def _connected(address: str, workers: int | None) -> Iterator[int]:
    """Ray connected for the block; yields how many actors to run. Only a cluster started here is stopped here."""
    try:
        import ray
    except ImportError as error:
        raise MissingDependencyError("running on Ray needs ray: pip install 'metalabel[ray]'") from error
    started = not ray.is_initialized()
    if started:
        # Ray's own chatter (and the workers' output, relayed) is for its operators, not for a person labeling
        # a pool; a worker's error still reaches the driver as the exception it raised
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                   "log_to_driver": False}
        try:
            if address == LOCAL:
                ray.init(num_cpus=workers, **options)
            else:
                _check_answers(address)
                ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise BadInputError(f"cannot reach a Ray cluster at {address!r}: {error}", hint=_START_A_CLUSTER) from error
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield max(1, min(cpus, workers) if workers is not None else cpus)
    finally:
        if started:
            ray.shutdown()
