"""Shared fixtures: a toy geometry, tiny shower samples and the optional Geant4 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calogan.data import ShowerData
from calogan.geometry import Geometry, Layer

GEANT4_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geant4"


def geant4_file(name: str) -> Path:
    """Path of a shared Geant4 file, skipping the test with the reason when it is absent."""
    path = GEANT4_DIR / name
    if not path.exists():
        pytest.skip(f"shared Geant4 data not found at {path} (a user's clone has no ../shared)")
    return path


@pytest.fixture
def toy_geometry() -> Geometry:
    """Two small layers: 2x4 cells of 10x5 mm and 3x3 cells of 20x20 mm."""
    return Geometry(
        "toy",
        (
            Layer("front", (2, 4), (10.0, 5.0), 30.0),
            Layer("back", (3, 3), (20.0, 20.0), 60.0),
        ),
    )


def toy_showers(geometry: Geometry, n: int = 16, seed: int = 0, **conditions) -> ShowerData:
    """Random showers whose energy is below the incident energy (E_tot/E_inc ~ 0.5)."""
    rng = np.random.default_rng(seed)
    e_inc = rng.uniform(1.0, 10.0, n)
    shares = rng.dirichlet(np.ones(geometry.n_cells), n)
    cells = (shares * 0.5 * 1000.0 * e_inc[:, None]).astype(np.float32)
    return ShowerData(geometry, cells, e_inc, np.full(n, -11), {k: np.asarray(v) for k, v in conditions.items()})


@pytest.fixture
def toy_data(toy_geometry) -> ShowerData:
    return toy_showers(toy_geometry)
