"""Data-parallel training helpers: the torchrun process group, gradient averaging over ranks, batch shards.

A run started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables) is data-parallel: ``World.from_env`` joins the process group (NCCL when
the ranks run on CUDA devices, gloo on CPUs) and the training loop (``calogan.training``)

- gives every rank its slice of each global batch (``World.shard``): ``batch_size`` is the
  *global* batch, each of the W ranks computes the losses of ``batch_size / W`` showers;
- averages the gradients of each parameter group over the ranks after every backward pass
  (``World.average_gradients``), so that every rank takes the same optimiser step, the one a
  single process would take on the whole batch for losses that are means over showers;
- keeps the data order (the sampler) global and identical on every rank, which is why a run
  resumes with any number of ranks;
- writes checkpoints, logs and the progress bar on rank 0 only.

Why not ``torch.nn.parallel.DistributedDataParallel``: its all-reduce hooks assume one
forward and one backward per update through the wrapped module, while a family's loss calls
the generator and critic submodules several times (real and fake batches, the WGAN-GP's
interpolates) and the gradient penalty differentiates twice (``create_graph=True``), which
DDP does not support. Averaging each parameter group's gradients after ``backward()`` is the
same arithmetic (one flattened all-reduce per group per update, as DDP's buckets), works for
any family that keeps the ``GANModel`` contract, and is exact for double backward.

Batch normalisation: on GPUs the model's BatchNorm layers become ``torch.nn.SyncBatchNorm``
(``sync_batch_norm``), whose batch statistics are those of the global batch, as in a single
process. torch has no SyncBatchNorm for CPU tensors, so on CPUs (gloo) each rank normalises
with the statistics of its own ``batch_size / W`` showers, and the running statistics are
averaged over the ranks after every step (``World.average_batch_norm``) so that every rank,
and the checkpoint, holds the same. Minibatch discrimination (the CaloGAN families) compares
the showers of one rank's batch on any device: its features are per rank.

>>> world = World.single()
>>> world.size, world.is_main, world.shard(8)
(1, True, slice(0, 8, None))
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from calogan.errors import ConfigError
from calogan.runtime import resolve_device

__all__ = ["ENV_KEYS", "World", "rank_seed", "sync_batch_norm"]

# What torchrun sets for every rank; WORLD_SIZE alone marks a launch.
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def rank_seed(seed: int, rank: int, *words: int) -> int:
    """The torch seed of ``rank``: ``seed`` itself on rank 0 (a one-process run is unchanged),
    a derived seed elsewhere, so that the ranks draw different noise.

    >>> rank_seed(7, 0), rank_seed(7, 1) == rank_seed(7, 1) != rank_seed(7, 2)
    (7, True)
    """
    if rank == 0 and not words:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(rank), *map(int, words)]).generate_state(2, np.uint32)
    return int(state.view(np.uint64)[0] >> np.uint64(1))  # torch.manual_seed takes < 2^63


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a data-parallel run (one rank when not launched by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" or "gloo" when a process group was joined

    @classmethod
    def single(cls) -> World:
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @staticmethod
    def launched() -> bool:
        """Whether torchrun (or another launcher setting WORLD_SIZE) started this process."""
        return "WORLD_SIZE" in os.environ

    @classmethod
    def from_env(cls, device: str = "auto", *, timeout_minutes: float = 30.0) -> tuple[World, str]:
        """Join the process group torchrun describes in the environment; returns the world and
        the device this rank trains on.

        ``device`` is the run's choice (``auto``, ``cpu``, ``cuda`` or ``cuda:i``): ``auto`` and
        ``cuda`` become ``cuda:LOCAL_RANK`` when there are CUDA devices (one GPU per rank), an
        explicit ``cuda:i`` is kept. Without a launch this is ``World.single()`` and the device
        as ``resolve_device`` gives it. A world of one rank joins no group.
        """
        if not cls.launched():
            return cls.single(), resolve_device(device)
        try:
            rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local = int(os.environ.get("LOCAL_RANK", rank))
        except (KeyError, ValueError):
            raise ConfigError(
                "a distributed launch needs RANK, WORLD_SIZE and LOCAL_RANK as whole numbers in the environment (torchrun sets them)"
            ) from None
        if not 0 <= rank < size:
            raise ConfigError(f"environment: RANK={rank} is not in [0, WORLD_SIZE={size})")
        resolved = resolve_device(device)
        if resolved == "cuda" and size > 1:
            if local >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} CUDA devices: one rank per GPU")
            resolved = f"cuda:{local}"
        if size == 1:
            return cls(rank, size, local, None), resolved
        backend = "nccl" if resolved.startswith("cuda") else "gloo"
        if not dist.is_initialized():
            kwargs = {}
            if backend == "nccl":
                torch.cuda.set_device(torch.device(resolved))
                if "device_id" in inspect.signature(dist.init_process_group).parameters:  # torch >= 2.3: bind the rank's GPU
                    kwargs["device_id"] = torch.device(resolved)
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
        return cls(rank, size, local, backend), resolved

    def close(self) -> None:
        """Leave the process group (a no-op for one rank)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # -- batches -------------------------------------------------------------------------

    def per_rank(self, batch_size: int, what: str = "batch_size") -> int:
        """Showers per rank of a global batch; the batch must divide evenly."""
        if batch_size % self.size:
            raise ConfigError(f"{what} {batch_size} is the global batch and must divide evenly over the {self.size} ranks")
        return batch_size // self.size

    def shard(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of ``batch_size`` showers."""
        b = self.per_rank(batch_size)
        return slice(self.rank * b, (self.rank + 1) * b)

    # -- collectives ---------------------------------------------------------------------

    def average_gradients(self, parameters) -> None:
        """Replace each gradient of ``parameters`` by its mean over the ranks (in place).

        The gradients are flattened into one buffer per dtype and device and all-reduced
        once. Parameters without a gradient are skipped: every rank runs the same code, so
        the same ones have none everywhere.
        """
        if not self.distributed:
            return
        groups: dict[tuple, list[torch.Tensor]] = {}
        for p in parameters:
            if p.grad is not None:
                groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
        for grads in groups.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.size
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``values`` over the ranks (a new tensor; NaN anywhere stays NaN)."""
        if not self.distributed:
            return values
        out = values.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.size

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's ``flag`` on every rank: decisions that must be taken together (stop now)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def average_batch_norm(self, module: torch.nn.Module) -> None:
        """Average the running statistics of ``module``'s plain BatchNorm layers over the ranks
        (SyncBatchNorm layers need not: theirs are identical already)."""
        if not self.distributed:
            return
        stats = [
            t
            for m in module.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(m, torch.nn.SyncBatchNorm) and m.track_running_stats
            for t in (m.running_mean, m.running_var)
            if t is not None
        ]
        if stats:
            flat = torch.cat([t.reshape(-1) for t in stats])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.size
            offset = 0
            for t in stats:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (the start of a run, as DDP does)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def gather(self, obj):
        """Every rank's ``obj`` as a list on every rank (picklable objects; one rank: ``[obj]``)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def sync_batch_norm(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``module`` with its BatchNorm layers replaced by ``SyncBatchNorm`` when ``world`` has
    several ranks on CUDA devices (the parameters are kept, so optimisers see the same
    tensors); unchanged otherwise (torch's SyncBatchNorm runs on GPUs only). State-dict keys
    are those of BatchNorm: checkpoints load into the plain model."""
    if not world.distributed or device.type != "cuda":
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
