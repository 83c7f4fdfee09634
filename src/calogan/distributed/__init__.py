"""Beyond one machine: data-parallel training, a parallel hyper-parameter search, sharded mass production.

- ``ddp``: the process group of a ``torchrun`` launch (NCCL on GPUs, gloo on CPUs), gradient
  averaging over ranks, batch sharding, rank-0 output. ``calogan.training`` uses it; a run
  started by ``torchrun --nproc_per_node N -m calogan train ...`` is data-parallel.
- ``tune``: ``calogan tune``, an Optuna study that any number of workers join through one
  storage URL; trials are trainings scored by a shape-aware validation metric and pruned
  on their intermediate validations. Needs the ``distributed`` extra (optuna).
- ``production``: ``calogan generate --shards N --cluster ...``, whole shard files written
  by Dask workers, a manifest (``calogan.shards``) that makes a rerun finish what is
  missing. Needs the ``distributed`` extra (dask[distributed]).

The submodules are not imported here: each pulls in different optional dependencies, and the
training loop imports ``ddp`` alone.
"""

__all__: list[str] = []
