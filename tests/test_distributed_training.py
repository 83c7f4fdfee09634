"""Data-parallel training (calogan.distributed.ddp in the training loop): two CPU ranks on gloo.

The equality with one process uses a deterministic toy family (no latent noise, a gradient
penalty at the real showers, so double backward): the model families draw their noise from
each rank's own torch RNG, so their two-rank runs agree with a one-process run in
distribution, not shower for shower. The real families are run under torchrun through the
command line and must end with identical weights on every rank.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from calogan.distributed.ddp import World
from calogan.io import write_showers
from calogan.models import FAMILIES
from calogan.models.base import GANModel
from calogan.training import TrainConfig, apply_overrides, train
from conftest import toy_showers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOY = {"toy_dp": f"{Path(__file__).stem}:ToyGAN"}


@dataclass(frozen=True)
class ToyConfig:
    latent_dim: int = 1


class ToyGAN(GANModel):
    """A conditional generator and critic without noise: every loss is a mean over showers."""

    family = "toy_dp"
    config_class = ToyConfig

    def __init__(self, geometry, conditions, transform, config) -> None:
        super().__init__(geometry, conditions, transform, config)
        n, c = geometry.n_cells, conditions.n_cond
        self.gen = nn.Linear(c, n)
        self.critic = nn.Sequential(nn.Linear(n + c, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, cond, z=None):
        return self.gen(self.conditions.normalise(cond))

    def _critic(self, x, cond):
        return self.critic(torch.cat([x, self.conditions.normalise(cond)], dim=1)).squeeze(1)

    def discriminator_loss(self, real, cond):
        w = self._critic(real, cond).mean() - self._critic(self(cond).detach(), cond).mean()
        x = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._critic(x, cond).sum(), x, create_graph=True)
        gp = ((grad.norm(dim=1) - 1) ** 2).mean()
        return -w + gp, {"w": w.detach()}

    def generator_loss(self, cond, real=None):
        return -self._critic(self(cond), cond).mean(), {}

    def generator_parameters(self):
        return list(self.gen.parameters())

    def discriminator_parameters(self):
        return list(self.critic.parameters())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toy_config(data, **kw) -> TrainConfig:
    values = dict(
        family="toy_dp",
        data=str(data),
        batch_size=8,  # global: 4 per rank on two ranks
        d_steps=2,
        condition_sampling="big_batch",
        lr_g=1e-2,
        lr_d=1e-2,
        max_steps=6,
        val_fraction=0.0,
        checkpoint_every=3,
        log_every=3,
        progress=False,
        threads=1,
    )
    values.update(kw)
    return TrainConfig.from_dict(values)


def _rank_main(rank: int, world: int, ports: list[int], data: str, folder: str) -> None:
    """One rank of four runs in a row: 6 steps; 3 steps; that run resumed to 6 steps; the
    tiny CaloGAN (batch norm, minibatch discrimination) for 2 steps."""
    FAMILIES.update(TOY)
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    runs = [("two", {}, False), ("two_half", {"max_steps": 3}, False), ("two_resumed", {}, True)]
    for port, (name, kw, resume) in zip(ports, runs):
        os.environ["MASTER_PORT"] = str(port)
        out = Path(folder) / name
        if resume:  # rank 0 copies the finished half run; the other rank waits for the copy
            if rank == 0:
                shutil.copytree(Path(folder) / "two_half", Path(folder) / ".copy")
                os.rename(Path(folder) / ".copy", out)
            for _ in range(1200):
                if out.exists():
                    break
                time.sleep(0.05)
        train(_toy_config(data, **kw), out, resume=resume)
    os.environ["MASTER_PORT"] = str(ports[-1])
    calogan = TrainConfig.from_yaml(CONFIGS / "calogan_tiny.yaml")
    calogan = apply_overrides(calogan, [f"data={data}", "batch_size=16", "max_steps=2", "val_fraction=0", "progress=false", "threads=1"])
    train(calogan, Path(folder) / "calogan")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_same_global_batch_and_resume_with_any_world_size(tmp_path, toy_geometry, monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy_dp", TOY["toy_dp"])
    data = write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=64, seed=3))
    torch.multiprocessing.spawn(_rank_main, args=(2, [_free_port() for _ in range(4)], str(data), str(tmp_path)), nprocs=2)
    two, half = tmp_path / "two", tmp_path / "two_half"
    # one process, the same global batch of 8
    train(_toy_config(data), tmp_path / "one")
    # the two-rank run stopped at step 3, resumed by one process
    shutil.copytree(half, tmp_path / "one_resumed")
    train(_toy_config(data), tmp_path / "one_resumed", resume=True)

    ref = _weights(two / "last.pt")
    state = torch.load(two / "last.pt", map_location="cpu", weights_only=False)["training"]
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 1  # every rank's noise stream is kept
    for other in ("one", "one_resumed"):
        got = _weights(tmp_path / other / "last.pt")
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{other}: {k}")
    # the same data order: the sampler is global, whatever the world size
    for other in ("one", "one_resumed", "two_resumed"):
        s = torch.load(tmp_path / other / "last.pt", map_location="cpu", weights_only=False)["training"]["sampler"]
        assert s["pos"] == state["sampler"]["pos"] and torch.equal(s["perm"], state["sampler"]["perm"])
    # a two-rank resume continues bit for bit
    got = _weights(tmp_path / "two_resumed" / "last.pt")
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    # the gradients did move the weights (the test would pass on a model that never trains otherwise)
    start = _weights(half / "last.pt")
    assert any(not torch.equal(start[k], ref[k]) for k in ref)
    # the CaloGAN's batch norm: both ranks ended with the same weights and running statistics
    # (saving compares every rank's digest), which moved from their initial values
    ckpt = torch.load(tmp_path / "calogan" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["training"]["world_size"] == 2
    running = [v for k, v in ckpt["state_dict"].items() if k.endswith("running_var")]
    assert running and any(not torch.equal(v, torch.ones_like(v)) for v in running)


@pytest.mark.slow
def test_torchrun_trains_the_wgan_with_identical_weights_on_every_rank(tmp_path, toy_geometry):
    """torchrun -m calogan train: the WGAN-GP (gradient penalty: double backward) on 2 ranks."""
    data = write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=96, seed=4))
    args = ["--set", "model.latent_dim=4", "--set", "model.generator_hidden=[16]", "--set", "model.critic_hidden=[16]"]
    args += ["--set", "model.physics_hidden=[8]", "--set", "d_steps=2", "--set", "condition_sampling=dataset", "--set", "log_every=1"]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "calogan", "train"]
    cmd += [*args, "--data", str(data), "-o", str(out), "--threads", "1", "--quiet", "--set", "batch_size=16"]
    cmd += ["--set", "max_steps=4", "--set", "val_every=2", "--set", "checkpoint_every=2", "--set", "val_bins=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("stopped at step 4") == 1 and "on 2 ranks" in proc.stdout  # rank 0 speaks for the run
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["training"]["world_size"] == 2  # saving checks every rank's weights digest
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r for r in logs if "val" not in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and np.isfinite([r["d_loss"] for r in losses]).all()
    assert [r["step"] for r in logs if "val" in r] == [2, 4]


def test_a_global_batch_must_split_evenly_over_the_ranks():
    world = World(rank=1, size=3)
    assert world.shard(12) == slice(4, 8)
    with pytest.raises(Exception, match="batch_size 10 is the global batch and must divide evenly over the 3 ranks"):
        world.shard(10)
