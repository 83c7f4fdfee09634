"""Every GAN family learns: a short training on tiny showers moves the generated showers towards
the data. A loss with the wrong sign, swapped real and fake labels or a detached generator makes
these fail (the plumbing tests elsewhere would still pass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calogan.checkpoint import load_checkpoint
from calogan.config import read_config
from calogan.data import Conditions, ShowerData
from calogan.generate import generate
from calogan.geometry import Geometry, Layer
from calogan.io import write_showers
from calogan.training import TrainConfig, apply_overrides, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GEOMETRY = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))


def structured_showers(n: int, seed: int, with_x0: bool = False) -> ShowerData:
    """Showers with one fixed mean shape (most energy in a few cells), 80 % of E_inc deposited
    and 10 % fluctuations: what a generator must learn is the shape and the scale."""
    rng = np.random.default_rng(seed)
    e_inc = rng.uniform(2.0, 10.0, n)
    shape = np.zeros(GEOMETRY.n_cells)
    shape[[1, 2, 9, 12]] = [0.3, 0.2, 0.35, 0.15]
    shape[[0, 3, 10, 13]] = 0.01
    shape /= shape.sum()
    cells = shape * rng.normal(1.0, 0.1, (n, GEOMETRY.n_cells)).clip(0.5) * 0.8 * 1000.0 * e_inc[:, None]
    conditions = {"x0": rng.uniform(-5.0, 5.0, n)} if with_x0 else {}
    return ShowerData(GEOMETRY, cells.astype(np.float32), e_inc, np.full(n, -11), conditions)


def distance(model_path, real: ShowerData) -> float:
    """Mean |generated - real| per cell of the mean shower over E_inc, plus |<E_tot/E_inc>| error."""
    ckpt = load_checkpoint(model_path)
    keys = ckpt.model.conditions.keys[1:]
    cond = Conditions(real.e_inc, real.pdg, {k: real.conditions[k] for k in keys})
    gen = np.concatenate([d.cells for d in generate(ckpt.model, cond, seed=1)])
    shape = lambda c: (c / (1000.0 * real.e_inc[:, None])).mean(0)  # noqa: E731
    return float(np.abs(shape(gen) - shape(real.cells)).sum())


FAMILIES = {
    "wgan": ("wgan_demo.yaml", False, ["max_steps=400", "batch_size=32", "d_steps=2"]),
    "calogan": ("calogan_tiny.yaml", False, ["max_steps=250", "lr_d=2e-4", "lr_g=1e-3"]),
    "conditional calogan": (
        "calogan_tiny.yaml",
        True,
        ["max_steps=400", "lr_d=2e-4", "lr_g=1e-3", "family=cond_calogan", "conditions=[e_inc,x0]"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_short_training_moves_the_showers_towards_the_data(family, tmp_path):
    config_file, with_x0, overrides = FAMILIES[family]
    data = write_showers(tmp_path / "train.h5", structured_showers(256, seed=0, with_x0=with_x0))
    real = structured_showers(200, seed=1, with_x0=with_x0)
    base = TrainConfig.from_dict(read_config(CONFIGS / config_file))
    common = [f"data={data}", "val_fraction=0.0", "threads=1", "progress=false", "seed=0"]
    start = train(apply_overrides(base, [*common, *overrides, "max_steps=1"]), tmp_path / "start")
    end = train(apply_overrides(base, [*common, *overrides]), tmp_path / "end")
    before, after = distance(start.best, real), distance(end.best, real)
    assert after < 0.5 * before, (before, after)
