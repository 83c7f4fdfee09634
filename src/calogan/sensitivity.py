"""The known-distortion test of the evaluation: does every headline metric see what it should, and nothing where there is nothing?

``sensitivity(reference)`` cuts a reference sample at random into an evaluation reference
of 2n showers (its halves A and B give the floors) and n further showers; every distortion
of ``calogan.distortions.default_suite`` is applied to those n showers, and each distorted
copy is evaluated against the reference as a candidate would be (``calogan.evaluation``).
The first row, "self-copy", is the n showers undistorted: other showers of the same run, so
every metric must sit at its floor there. ``calogan evaluate --sensitivity REF.h5 -o DIR``
runs it; ``benchmarks/bench_sensitivity.py`` prints the table.

Significances in the table (``FLAG_SIGMA`` = 5 flags):
- classifier AUCs: z = (AUC − floor) / σ, σ combining both AUCs' run spreads and sample
  statistics (``calogan.metrics.classifiers``);
- ``E_tot χ²``: the one-sided Gaussian significance of the χ² of E_tot / E_inc in ten
  incident-energy bins (``energy_chi2``);
- ``response``: the same for the χ² of the mean response per resolution bin against the
  reference's, with their bootstrap errors;
- FPD and KPD: (value − floor) / sqrt(σ² + σ_floor²) with their own uncertainties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calogan.data import ShowerData
from calogan.distortions import Distortion, default_suite
from calogan.errors import CaloganError
from calogan.evaluation import FLAG_SIGMA, Evaluation, EvaluationConfig, Sample, evaluate

__all__ = ["SensitivityError", "SensitivityResult", "format_table", "sensitivity", "table_rows"]


class SensitivityError(CaloganError, ValueError):
    """A reference too small for the known-distortion test."""


@dataclass(frozen=True)
class SensitivityResult:
    """The evaluation of every distorted copy (``evaluation``), the distortions, and the table rows (``rows``)."""

    evaluation: Evaluation
    distortions: list[Distortion]
    rows: list[dict]
    n_per_class: int


def _z(value: dict | None, floor: dict | None) -> float | None:
    if not value or not floor or value.get("value") is None or floor.get("value") is None:
        return None
    s = math.hypot(value.get("uncertainty") or 0.0, floor.get("uncertainty") or 0.0)
    return (value["value"] - floor["value"]) / s if s > 0 else None


def table_rows(metrics: dict, distortions: list[Distortion]) -> list[dict]:
    """One row per candidate of ``metrics`` (a metrics.json dictionary): every headline metric, its floor and significance."""
    fl = metrics["floor"]
    rows = []
    for c, dist in zip(metrics["candidates"], distortions):
        s = c["summary"]
        row = {"distortion": c["label"], "description": dist.description}
        for level in ("low", "low_calochallenge", "high"):
            r = s[f"classifier_{level}"]
            row[f"auc_{level}"] = (
                None if r is None else {"auc": r["auc"], "floor": r["floor"], "auc_std": r["auc_std"], "z": r["excess_sigma"]}
            )
        row["energy_chi2"] = {"value": s["energy_chi2"], "z": s["energy_chi2_sigma"]}
        row["response"] = {
            "chi2": s["response_deviation"]["chi2"],
            "ndf": s["response_deviation"]["ndf"],
            "z": s["response_deviation"]["sigma"],
        }
        row["fpd"] = {"value": s["fpd"], "floor": fl["fpd"], "z": _z(s["fpd"], fl["fpd"])}
        row["kpd"] = {"value": s["kpd"], "floor": fl["kpd"], "z": _z(s["kpd"], fl["kpd"])}
        zs = {
            "low-level AUC": row["auc_low"] and row["auc_low"]["z"],
            "CaloChallenge AUC": row["auc_low_calochallenge"] and row["auc_low_calochallenge"]["z"],
            "high-level AUC": row["auc_high"] and row["auc_high"]["z"],
            "E_tot chi2": row["energy_chi2"]["z"],
            "response": row["response"]["z"],
        }
        row["flagged_by"] = [k for k, z in zs.items() if z is not None and z >= FLAG_SIGMA]
        rows.append(row)
    return rows


def sensitivity(
    reference: ShowerData,
    *,
    n: int = 1000,
    config: EvaluationConfig | None = None,
    distortions: list[Distortion] | None = None,
    seed: int = 0,
    progress=None,
) -> SensitivityResult:
    """Evaluate every distortion of ``reference`` (n showers each) against 2n other showers of it; see the module docstring.

    Needs 3n showers; ``distortions`` defaults to ``default_suite(reference)``, ``config`` to ``EvaluationConfig()``.
    """
    config = EvaluationConfig() if config is None else config
    if n < 20:
        raise SensitivityError(f"the sensitivity test needs at least 20 showers per sample, got n = {n}")
    if len(reference) < 3 * n:
        raise SensitivityError(f"the sensitivity test with n = {n} needs {3 * n} reference showers, the file holds {len(reference)}")
    distortions = default_suite(reference) if distortions is None else distortions
    order = np.random.default_rng(seed).permutation(len(reference))
    ref = reference.select(np.sort(order[: 2 * n]))
    rest = reference.select(np.sort(order[2 * n : 3 * n]))
    rng = np.random.default_rng(seed + 1)
    candidates = [Sample(d.name, d.apply(rest, rng), "") for d in distortions]
    ev = evaluate(Sample("reference", ref, ""), candidates, config, progress=progress)
    return SensitivityResult(ev, distortions, table_rows(ev.metrics, distortions), n)


def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _auc_cell(a: dict | None) -> str:
    if a is None:
        return "skipped"
    z = a["z"]
    return f"{_fmt(a['auc']['value'])} ± {_fmt(a['auc']['uncertainty'])} ({_fmt(z, 1)}σ)"


def format_table(rows: list[dict], n_per_class: int) -> str:
    """The rows as a Markdown table: AUCs with their σ and significance, the floors in the first line, χ² significances, FPD/KPD."""
    head = (
        f"| distortion ({n_per_class} vs {n_per_class}) | low-level AUC | CaloChallenge AUC | high-level AUC | E_tot χ²/ndf | response χ² | FPD | KPD | flagged (≥ 5σ) by |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    if rows:
        fl = [rows[0][f"auc_{k}"] for k in ("low", "low_calochallenge", "high")]
        floor = " | ".join("–" if a is None else f"{_fmt(a['floor']['value'])} ± {_fmt(a['floor']['uncertainty'])}" for a in fl)
        lines.append(
            f"| floor (reference B vs A) | {floor} | 1 | – | {_fmt(rows[0]['fpd']['floor']['value'])} | {_fmt(rows[0]['kpd']['floor']['value'], 4)} | |"
        )
    for r in rows:
        e = r["energy_chi2"]
        resp = r["response"]
        lines.append(
            f"| {r['distortion']} | {_auc_cell(r['auc_low'])} | {_auc_cell(r['auc_low_calochallenge'])} | {_auc_cell(r['auc_high'])} | "
            f"{_fmt(e['value']['value'], 2)} ({_fmt(e['z'], 1)}σ) | {_fmt(resp['chi2'], 1)}/{resp['ndf']} ({_fmt(resp['z'], 1)}σ) | "
            f"{_fmt(r['fpd']['value']['value'])} ({_fmt(r['fpd']['z'], 1)}σ) | {_fmt(r['kpd']['value']['value'], 4)} ({_fmt(r['kpd']['z'], 1)}σ) | "
            f"{', '.join(r['flagged_by']) or 'none'} |"
        )
    return head + "\n".join(lines) + "\n"
