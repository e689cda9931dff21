"""Data-parallel meta-training: each meta-batch's episodes split across worker processes.

Every worker holds the whole learner, draws its contiguous share of the step's episodes
(episode ``i`` is a pure function of ``(seed, i)``, so the shares together are exactly
the one-process meta-batch), computes the outer-loop gradient of its share, and the
gradients are averaged across workers (torch.distributed ``all_reduce``, weighted by
each share's number of tasks) before every worker takes the same optimizer step. The
update is the one-process update up to the order floats are summed in. Only the first
worker (rank 0) validates and writes checkpoints, the same files as a one-process run,
so a run may be resumed with any number of workers.

Workers start as processes on this machine (gloo, rendezvous through a file) or, given
``ray``, through Ray Train's ``TorchTrainer`` on a Ray cluster. This module is imported
only by a data-parallel run; torch.distributed and Ray are imported here, lazily.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from metalabel.errors import BadInputError, MetalabelError, MissingDependencyError
from metalabel.files import remove_stale_staging
from metalabel.meta.checkpoint import load_learner
from metalabel.meta.functional import RUNNING_STAT_BUFFERS, TaskLearner
from metalabel.meta.train import TrainConfig, TrainingJob, _resolved, run_training

_log = logging.getLogger(__name__)


class WorkerFailedError(MetalabelError, RuntimeError):
    """A worker of a data-parallel run died or raised; the run stopped and its last checkpoint is whole."""


@dataclass(frozen=True)
class Collective:
    """One worker's view of a data-parallel run: its rank among ``world`` workers, in an initialized process group."""

    rank: int
    world: int

    def share(self, first: int, tasks: int) -> tuple[int, int]:
        """This worker's contiguous part of episodes ``first .. first + tasks - 1``: (first episode, count)."""
        base, extra = divmod(tasks, self.world)
        start = first + self.rank * base + min(self.rank, extra)
        return start, base + (self.rank < extra)

    def average(self, learner: TaskLearner, loss: torch.Tensor, *, weight: float) -> float:
        """Replace each gradient (and BN running statistics) by the workers' weighted mean; return the mean loss.

        ``weight`` is this worker's share of the meta-batch: a share's loss is the mean over
        its tasks, so share-weighted sums give the mean over the whole meta-batch. Everything
        travels in one flat buffer, one ``all_reduce`` per step.
        """
        import torch.distributed as dist

        params = [p for p in learner.parameters() if p.requires_grad]
        reached = [p.grad is not None for p in params]
        # running statistics are task means too (TaskLearner.meta_loss averages per-task copies);
        # in transductive mode they are never updated and stay equal on every worker
        buffers = ([b for name, b in learner.named_buffers()
                    if b.is_floating_point() and name.rsplit(".", 1)[-1] in RUNNING_STAT_BUFFERS]
                   if learner.batch_norm == "running" else [])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]  # one layout on every worker
        flat = torch.cat([t.detach().reshape(-1) for t in (*grads, *buffers)] + [loss.detach().reshape(1)])
        flat.mul_(weight)
        dist.all_reduce(flat)
        offset = 0
        for param, has_grad in zip(params, reached):
            # a parameter the loss does not reach keeps no gradient, so the optimizer skips it as one process would
            param.grad = flat[offset: offset + param.numel()].view_as(param).clone() if has_grad else None
            offset += param.numel()
        for buffer in buffers:
            buffer.copy_(flat[offset: offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()
        return float(flat[offset])

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every worker (a decision taken by one clock must be taken by all)."""
        import torch.distributed as dist

        value = torch.tensor([float(flag)])
        dist.broadcast(value, src=0)
        return bool(value.item())


def check_data_parallel(config: TrainConfig, *, workers: int, ray: str | None) -> None:
    """Refuse, before any process starts, a run whose meta-batch cannot be split as the one-process run's."""
    if ray is not None and not ray:
        raise BadInputError("ray must be 'local' or a Ray cluster's address, not empty",
                            hint="e.g. ray='local', ray='auto' or ray='host:6379'")
    meta_batch = _resolved(config.meta_batch, "meta_batch")
    if meta_batch < workers:
        raise BadInputError(f"a meta-batch of {meta_batch} tasks cannot be split over {workers} workers",
                            hint=f"pass meta_batch (--meta-batch) of at least {workers}, ideally a multiple of it")
    if config.algo == "recurrent":
        raise BadInputError("the recurrent learner draws its support orders per meta-batch, so its update on "
                            "several workers would not be the one-process update",
                            hint="train it with workers=1")


def train_data_parallel(job: TrainingJob, *, workers: int, ray: str | None = None) -> TaskLearner:
    """Run ``job`` on ``workers`` processes (or Ray Train workers at ``ray``); returns the best learner."""
    if job.run is None:
        raise BadInputError("a data-parallel run needs a run folder", hint="pass out=")
    check_data_parallel(job.config, workers=workers, ray=ray)
    if ray is not None:
        _train_on_ray(job, workers=workers, address=ray)
    else:
        _train_on_processes(job, workers=workers)
    return load_learner(job.run / "best", device=job.device)


def _last_step(run: Path) -> str:
    state = run / "last" / "state.json"
    if not state.exists():
        return "no checkpoint was written yet"
    return f"the last checkpoint ({run / 'last'}, step {json.loads(state.read_text())['step']}) is whole"


def _finished_mark(scratch: Path, rank: int) -> Path:
    return scratch / f"finished-{rank}"


def _process_worker(rank: int, world: int, scratch: str, job: TrainingJob, threads: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{Path(scratch) / 'rendezvous'}", rank=rank,
                            world_size=world)
    try:
        run_training(job, Collective(rank, world))
        # no worker tears down its connections while the first still validates and writes checkpoints
        # (a worker that left early was seen to abort in gloo's teardown)
        dist.barrier()
        _finished_mark(Path(scratch), rank).touch()
    finally:
        dist.destroy_process_group()


def _train_on_processes(job: TrainingJob, *, workers: int, worker: Callable[..., None] = _process_worker) -> None:
    """Spawn ``workers`` processes running ``worker(rank, workers, scratch, job, threads)``."""
    import torch.multiprocessing as mp

    assert job.run is not None
    threads = max(1, torch.get_num_threads() // workers)  # the machine's cores shared, not oversubscribed
    # spawn, not fork: a forked child inherits torch's thread pools in whatever state they are
    with tempfile.TemporaryDirectory(prefix="metalabel-ddp-") as scratch:
        try:
            mp.start_processes(worker, args=(workers, scratch, job, threads), nprocs=workers, join=True,
                               start_method="spawn")
        except mp.ProcessExitedException as error:
            if any(_finished_mark(Path(scratch), rank).exists() for rank in range(workers)):
                # a worker past the final barrier means every worker finished training and the checkpoints are
                # written: a crash while torch.distributed shut down loses nothing
                _log.info("meta-training worker %d of %d died after the run finished (%s)", error.error_index,
                          workers, error)
                return
            how = f"was killed by {error.signal_name}" if error.signal_name else f"exited with {error.exit_code}"
            raise WorkerFailedError(f"meta-training worker {error.error_index} of {workers} {how}; the others "
                                    f"were stopped; {_last_step(job.run)}: run the same command again to "
                                    "resume") from None
        except mp.ProcessRaisedException as error:
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            raise WorkerFailedError(f"meta-training worker {error.error_index} of {workers} failed: {lines[-1]}; "
                                    f"{_last_step(job.run)}") from None


def _ray_worker(settings: dict) -> None:
    import torch.distributed as dist
    from ray import train

    context = train.get_context()
    collective = Collective(context.get_world_rank(), context.get_world_size())
    job: TrainingJob = settings["job"]
    assert job.run is not None
    state = job.run / "last" / "state.json"
    if collective.rank == 0:  # after a worker died in a save: put back or clear what it left
        remove_stale_staging(job.run / "last")
    dist.barrier()
    if not job.resuming and state.exists() and state.read_text() != settings["state_before"]:
        # Ray Train restarted the workers after one died: continue from this run's own checkpoint,
        # as running the command again would
        job = dataclasses.replace(job, resuming=True)
    run_training(job, collective)


def _train_on_ray(job: TrainingJob, *, workers: int, address: str, max_failures: int = 3) -> None:
    assert job.run is not None
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as error:
        raise MissingDependencyError(f"meta-training on Ray needs Ray Train ({error}): "
                                     "pip install 'metalabel[ray]'") from error
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    try:
        state = job.run / "last" / "state.json"
        settings = {"job": dataclasses.replace(job, progress=False),
                    "state_before": state.read_text() if state.exists() else None}
        # the run folder holds the checkpoints; Ray Train's storage (where every node reaches it, as the
        # run folder must be) only gets its bookkeeping, removed after the run
        trainer = TorchTrainer(
            _ray_worker, train_loop_config=settings, torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=job.device.startswith("cuda")),
            run_config=RunConfig(name="ray-train", storage_path=str(job.run.resolve() / ".ray-train"),
                                 failure_config=FailureConfig(max_failures=max_failures)))
        trainer.fit()
        shutil.rmtree(job.run / ".ray-train", ignore_errors=True)
    except Exception as error:  # Ray wraps a worker's failure in its own types, by version
        raise WorkerFailedError(f"meta-training on Ray failed ({type(error).__name__}: {error}); "
                                f"{_last_step(job.run)}") from error
    finally:
        if started_here:
            ray.shutdown()
