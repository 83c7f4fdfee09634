"""Classifier tests: classifiers trained to tell candidate showers from reference showers, and their seed-averaged AUC.

A classifier test trains a classifier to separate reference (label 0) from candidate
(label 1) showers given their conditions and reports the area under the ROC curve (AUC) on
showers it never saw: 0.5 when it cannot tell them apart, 1 when it always can. Quote it
beside its *floor*, the same test between two halves of the reference
(``classifier_with_floor``; ``calogan.evaluation`` always does).

Protocol (after the CaloChallenge, arXiv:2410.21611): the larger sample is subsampled to
the smaller (at most ``max_per_class`` showers each); each class is cut into train /
early-stopping-and-calibration / report parts (60/20/20 %); the classifier trains on the
first, the second picks the best epoch or boosting iteration and fits an isotonic
calibration, and the calibrated AUC is measured on the third. One number is the mean over
``n_runs`` independent runs: with the default splits the parts rotate over five folds
(run k reports on fold k, calibrates on fold k + 1, trains on the other three; runs 6-10
repeat with a new shuffle), so five runs put every shower in a report set once; each run
also trains from its own seed. The CaloChallenge's final tables average ten runs.

Uncertainty and "flagged"
-------------------------
The uncertainty of a seed-averaged AUC over K runs combines the spread of the runs and
the finite sample: σ² = s²/K + σ_HM(AUC; n_eff, n_eff)², where s is the standard deviation
of the K run AUCs and σ_HM the Hanley-McNeil (1982) standard error of one AUC measured on
n_eff = min(n, K · n_report) showers per class (n per class in all, n_report per report
part). The first term is the training and split randomness, the second the statistics of
the showers themselves, which averaging runs on the same showers cannot remove; since s
already holds part of the second, σ errs on the large side. With one run σ = σ_HM of its
report part. ``auc_excess`` gives z = (AUC − floor) / sqrt(σ² + σ_floor²); a candidate is
*flagged* when z ≥ 5. A sample of the reference's own distribution (the self-copy of the
sensitivity test) sits at |z| ≲ 2.

Feature sets (``classifier_features``; each starts with the conditions: log10 E_inc, then
x0, y0, theta and cos, sin phi where present)
- ``"low"`` (the headline low-level test): every cell as log10(E_cell / E_inc + 10⁻¹⁰)
  (10⁻¹⁰ is below the smallest Geant4 deposits, about 10⁻¹¹ E_inc, so zero and faint cells
  stay apart), the layer energies and E_tot as log10(E / E_inc + 10⁻¹⁰), and the number of
  hit cells per layer: the energy scale, the layer sharing and the hit structure are each
  one feature away.
- ``"low_calochallenge"``: the CaloChallenge's ``cls-low`` input, cells / E_inc.
- ``"low_normed"``: the CaloChallenge's ``cls-low-normed`` input, every layer's cells over
  its energy, plus log10(E_layer / MeV + 10⁻⁸).
- ``"high"``: the ``calogan.observables.high_level`` observables, energies as
  log10(E / MeV + 10⁻³).

Models (``ClassifierConfig.model``): ``"gbdt"``, gradient-boosted decision trees
(scikit-learn's ``HistGradientBoostingClassifier``: 15 leaves, learning rate 0.1, L2 1,
early stopping after 20 iterations without a lower loss on the calibration part, at most
300 trees), or ``"mlp"``, the CaloChallenge network (``n_layers`` hidden layers of
``hidden`` LeakyReLU units, Adam(W), binary cross-entropy, early stopping after ``patience``
epochs), on inputs standardised with the training part's mean and spread.

Design choice
-------------
``benchmarks/bench_classifiers.py`` on 1,000 against 1,000 Geant4 e+ showers of
``g4_eplus_active.h5``: the floor pair and every distortion of
``calogan.distortions.default_suite`` (``calogan.sensitivity`` describes them), five runs
each, the mean AUC (its run-to-run spread was 0.002-0.04); seconds for all eleven pairs on
one thread of the shared 2-core machine (load average about 8):

=================================  =====  =====  =====  =====  ======  =====  =====  =====  ======  =====  ===
design                             floor  self   x1.02  x1.05  sampl.  width  depth  depth  <1 MeV  -10 %  s
                                          copy                 x1.2    x1.1   +0.1   +0.3   zeroed  hits
=================================  =====  =====  =====  =====  ======  =====  =====  =====  ======  =====  ===
``low`` + trees (chosen)           0.489  0.510  0.873  0.986  0.812   0.996  0.518  0.746  0.996   0.975  311
``low`` + MLP (256 x 2, AdamW)     0.487  0.501  0.570  0.727  0.599   0.968  0.530  0.633  0.971   0.960  119
CaloChallenge cls-low (MLP)        0.509  0.492  0.500  0.582  0.557   0.973  0.535  0.666  0.832   0.742  130
CaloChallenge cls-low-normed, MLP  0.498  0.473  0.473  0.473  0.550   0.972  0.477  0.487  0.841   0.546  104
``high`` + trees                   0.506  0.524  0.880  0.989  0.558   0.987  0.562  0.825  0.997   0.934  30
``high`` + MLP (128 x 2)           0.507  0.503  0.876  0.984  0.549   0.981  0.611  0.874  0.996   0.948  82
=================================  =====  =====  =====  =====  ======  =====  =====  =====  ======  =====  ===

Trees on the ``"low"`` features detect most at low level: the energy scale and the sampling
fluctuations are one split away (log E_tot / E_inc against log E_inc), while the
CaloChallenge MLP on cells / E_inc, the input of published tables, sees neither a 2 % scale
(0.500) nor, hardly, a 5 % one (0.582). An MLP on the same log features learns the scale
less well from 600 showers per class. In an earlier comparison adding the per-layer
normalised cells to the trees changed no AUC by more than 0.01 and took four times longer.
On observables trees and MLP are close (the MLP sees the weak depth shift a little better,
the trees take a third of the time). The trees are the default of ``"low"`` and ``"high"``
(``default_classifier``); the CaloChallenge-protocol figure stays available as the level
``"low_calochallenge"`` (MLP on cells / E_inc) for comparison with published tables.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from calogan import observables as obs
from calogan.data import ShowerData
from calogan.metrics.base import Measurement, MetricError, standardise

__all__ = [
    "LEVELS",
    "LOG_EPS",
    "MODELS",
    "ClassifierConfig",
    "ClassifierResult",
    "auc",
    "auc_excess",
    "classifier_auc",
    "classifier_features",
    "classifier_test",
    "classifier_with_floor",
    "default_classifier",
    "isotonic_fit",
    "low_level_auc",
]

LEVELS = ("low", "high", "low_calochallenge", "low_normed")
MODELS = ("gbdt", "mlp")
LOG_EPS = 1e-10  # below the smallest Geant4 deposit over E_inc (about 1e-11 at 100 GeV)


@dataclass(frozen=True)
class ClassifierConfig:
    """Which classifier a classifier test trains, and how.

    - ``model``: ``"gbdt"`` (gradient-boosted trees) or ``"mlp"``; see the module docstring.
    - ``n_runs``: independent runs averaged into one AUC (five rotate the report part over
      every shower once); ``max_per_class``: showers per class at most (a random subsample
      of larger samples; ``None``: all); ``splits``: train / calibration / report fractions.
    - MLP: ``hidden``, ``n_layers``, ``dropout``, ``weight_decay`` (AdamW; 0: Adam), ``lr``,
      ``batch_size``, ``max_epochs``, ``patience`` (epochs without a lower calibration loss).
    - Trees: ``max_trees``, ``tree_leaves``, ``tree_lr``, ``tree_l2``, ``tree_patience``
      (iterations without a lower calibration loss), ``tree_min_leaf``.
    - ``threads``: CPU threads while training (torch's, or the trees' OpenMP pool), restored
      afterwards; one by default: on two shared cores threading these small problems costs
      more than it gains, and a fixed count keeps results reproducible. ``None`` keeps the
      library's own setting.
    """

    model: str = "gbdt"
    n_runs: int = 5
    max_per_class: int | None = 20000
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)
    hidden: int = 512
    n_layers: int = 3
    dropout: float = 0.0
    weight_decay: float = 0.0
    lr: float = 5e-4
    batch_size: int = 500
    max_epochs: int = 40
    patience: int = 5
    max_trees: int = 300
    tree_leaves: int = 15
    tree_lr: float = 0.1
    tree_l2: float = 1.0
    tree_patience: int = 20
    tree_min_leaf: int = 20
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise MetricError(f"classifier model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.hidden < 1 or self.n_layers < 1 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise MetricError(f"classifier sizes and epochs must be positive: {self}")
        if self.max_trees < 1 or self.tree_leaves < 2 or self.tree_patience < 1 or self.tree_min_leaf < 1 or self.tree_lr <= 0:
            raise MetricError(f"classifier tree settings must be positive (at least 2 leaves): {self}")
        if not 0 <= self.dropout < 1 or self.lr <= 0 or self.weight_decay < 0 or self.tree_l2 < 0:
            raise MetricError(f"classifier needs 0 <= dropout < 1, lr > 0 and non-negative regularisation: {self}")
        if len(self.splits) != 3 or min(self.splits) <= 0 or abs(sum(self.splits) - 1) > 1e-6:
            raise MetricError(f"classifier splits must be three positive fractions summing to 1, got {self.splits}")
        if self.n_runs < 1:
            raise MetricError(f"classifier n_runs must be >= 1, got {self.n_runs}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise MetricError(f"classifier max_per_class must be >= 1 or None, got {self.max_per_class}")
        if self.threads is not None and self.threads < 1:
            raise MetricError(f"classifier threads must be >= 1 or None, got {self.threads}")


# The CaloChallenge's MLP (arXiv:2410.21611) with two changes that fit 20k against 20k
# showers into minutes on two cores: learning rate 5e-4 with batches of 500, and early
# stopping after 5 epochs without a lower calibration loss (the CaloChallenge picks the best
# of a fixed number of epochs).
_CALOCHALLENGE = ClassifierConfig(model="mlp")


def default_classifier(level: str) -> ClassifierConfig:
    """The classifier a level is tested with by default: gradient-boosted trees, or the CaloChallenge MLP for its own inputs."""
    if level not in LEVELS:
        raise MetricError(f"classifier level must be 'low' or 'high' (or one of the feature sets {', '.join(LEVELS[2:])}), got {level!r}")
    return _CALOCHALLENGE if level in ("low_calochallenge", "low_normed") else ClassifierConfig()


@dataclass(frozen=True)
class ClassifierResult:
    """Outcome of a classifier test: the calibrated AUC averaged over runs, and what led to it.

    ``auc`` is the mean over ``n_runs`` runs (``auc_runs``, spread ``auc_std``), with the
    combined uncertainty ``auc_uncertainty`` of the module docstring. ``jsd`` is the
    CaloChallenge's Jensen-Shannon divergence estimate (log 2 − BCE of the calibrated
    outputs) / log 2 averaged over runs: 0 for indistinguishable samples, 1 for separable
    ones. ``auc_raw``: mean AUC before calibration. ``best_epoch``, ``epochs``: the median
    over runs of the chosen and the last epoch (MLP) or boosting iteration (trees).
    ``n_train``, ``n_val``, ``n_test``: showers (both classes) per run in each part;
    ``n_per_class``: showers per class in all; ``seconds``: training time of all runs.
    """

    auc: float
    auc_uncertainty: float
    jsd: float
    auc_raw: float
    best_epoch: int
    epochs: int
    n_train: int
    n_val: int
    n_test: int
    seconds: float
    auc_std: float = float("nan")
    auc_runs: tuple[float, ...] = field(default=())
    n_runs: int = 1
    n_per_class: int = 0
    model: str = "mlp"
    features: str = "low"

    @property
    def measurement(self) -> Measurement:
        return Measurement(self.auc, self.auc_uncertainty)


def auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a 1 > score of a 0), ties counting ½ (Mann-Whitney with mid-ranks)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        raise MetricError("AUC needs entries of both classes")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _auc_uncertainty(a: float, n1: int, n0: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from n1 positives and n0 negatives."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return float(math.sqrt(max(var, 0.0)))


def isotonic_fit(scores, labels, *, y_min: float = 1e-6, y_max: float = 1 - 1e-6):
    """Isotonic (monotone non-decreasing) regression of labels on scores by pool-adjacent-violators.

    Returns a function mapping new scores to calibrated probabilities: linear interpolation
    between the fitted points, clipped outside them and to [y_min, y_max] (what the
    CaloChallenge's ``IsotonicRegression(out_of_bounds='clip')`` does).
    """
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    ux, inverse = np.unique(x, return_inverse=True)
    w = np.bincount(inverse).astype(np.float64)
    m = np.bincount(inverse, weights=y) / w  # mean label per distinct score
    # pool adjacent violators over blocks (value, weight, length)
    vals, wts, lens = [], [], []
    for mi, wi in zip(m, w):
        v, wt, ln = mi, wi, 1
        while vals and vals[-1] > v:
            pv, pw, pl = vals.pop(), wts.pop(), lens.pop()
            v, wt, ln = (pv * pw + v * wt) / (pw + wt), pw + wt, pl + ln
        vals.append(v)
        wts.append(wt)
        lens.append(ln)
    fitted = np.clip(np.repeat(vals, lens), y_min, y_max)

    def predict(s):
        return np.interp(np.asarray(s, dtype=np.float64), ux, fitted)

    return predict


def auc_excess(result: ClassifierResult, floor: ClassifierResult) -> float | None:
    """z = (AUC − floor) / sqrt(σ² + σ_floor²): how far above its floor a candidate's AUC sits; ≥ 5 is *flagged*.

    ``None`` when neither AUC has an uncertainty.
    """
    s = math.hypot(result.auc_uncertainty, floor.auc_uncertainty)
    return (result.auc - floor.auc) / s if s > 0 else None


def _conditions(data: ShowerData) -> np.ndarray:
    conds = [np.log10(data.e_inc)]
    for key, value in data.conditions.items():
        conds += [np.cos(value), np.sin(value)] if key == "phi" else [value]  # phi is periodic
    return np.stack(conds, axis=1)


def classifier_features(data: ShowerData, level: str = "low", threshold: float = 0.0) -> np.ndarray:
    """(N, d) float64 classifier inputs of a sample: its conditions, then the shower as the ``level`` says.

    Conditions: log10(E_inc / GeV), then any of x0, y0 (mm), theta (rad) and cos, sin of
    phi the sample has, so that the classifier tests the showers given their conditions,
    not only their overall distribution. Levels (module docstring): ``"low"`` log-scaled
    cells, layer energies, E_tot (each over E_inc) and hit counts per layer;
    ``"low_calochallenge"`` cells / E_inc; ``"low_normed"`` cells over their layer's energy
    and log layer energies; ``"high"`` the ``high_level`` observables, energies as
    log10(E / MeV + 10⁻³); NaN entries (empty layers) are left for ``standardise`` to fill.
    Cells at or below ``threshold`` MeV count as empty.
    """
    if level not in LEVELS:
        raise MetricError(f"classifier level must be 'low' or 'high' (or one of the feature sets {', '.join(LEVELS[2:])}), got {level!r}")
    g = data.geometry
    conds = _conditions(data)
    cells = obs.apply_threshold(data.cells, threshold)
    e_mev = 1000.0 * data.e_inc[:, None]
    if level == "low_calochallenge":
        return np.concatenate([conds, cells / e_mev], axis=1)
    if level == "high":
        hl = obs.high_level(cells, g, data.e_inc)
        energies = {"e_tot"} | {f"{key}_{layer.name}" for key in ("e", "e_max") for layer in g.layers}
        cols = [np.log10(v + 1e-3) if k in energies else v for k, v in hl.items()]
        return np.concatenate([conds, np.stack(cols, axis=1)], axis=1)
    layer_e = obs.layer_energies(cells, g)  # (N, L) MeV
    if level == "low_normed":
        per_cell = layer_e[:, g.layer_of_cell()]  # (N, n_cells): each cell's layer energy
        return np.concatenate([conds, cells / (per_cell + 1e-16), np.log10(layer_e + 1e-8)], axis=1)
    hits = np.stack([(cells[:, g.layer_slice(i)] > 0).sum(axis=1) for i in range(g.n_layers)], axis=1)
    return np.concatenate(
        [
            conds,
            np.log10(cells / e_mev + LOG_EPS),
            np.log10(layer_e / e_mev + LOG_EPS),
            np.log10(layer_e.sum(axis=1, keepdims=True) / e_mev + LOG_EPS),
            hits,
        ],
        axis=1,
    )


def _run_parts(n: int, splits, n_runs: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Per run, (train, calibration, report) indices into one class of n showers.

    Splits (k−2)/k, 1/k, 1/k rotate over k folds of a shuffle (a new shuffle every k runs);
    other splits draw a new random split per run.
    """
    k = round(1 / splits[2])
    folds_ok = k >= 3 and abs(splits[1] - 1 / k) < 1e-9 and abs(splits[2] - 1 / k) < 1e-9
    runs, folds = [], []
    for r in range(n_runs):
        if not folds_ok:
            order = rng.permutation(n)
            bounds = np.round(np.cumsum([0.0, *splits]) * n).astype(int)
            runs.append([order[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
            continue
        if r % k == 0:
            folds = np.array_split(rng.permutation(n), k)
        i = r % k
        test, val = folds[i], folds[(i + 1) % k]
        train = np.concatenate([folds[j] for j in range(k) if j not in (i, (i + 1) % k)])
        runs.append([train, val, test])
    return runs


def _train_mlp(x_tr, y_tr, x_va, y_va, x_te, config: ClassifierConfig, seed: int):
    """Train the MLP with early stopping; return sigmoid outputs on the calibration and report sets, best and last epoch."""
    import torch

    x_tr, x_va, x_te = standardise(x_tr, x_va, x_te)
    with torch.random.fork_rng(devices=[]):  # seed torch without moving the caller's random stream
        torch.manual_seed(seed)
        layers, width = [], x_tr.shape[1]
        for _ in range(config.n_layers):
            layers += [torch.nn.Linear(width, config.hidden), torch.nn.LeakyReLU(), torch.nn.Dropout(config.dropout)]
            width = config.hidden
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        if config.weight_decay > 0:
            opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        tr_x, tr_y = torch.as_tensor(x_tr, dtype=torch.float32), torch.as_tensor(y_tr, dtype=torch.float32)
        va_x, va_y = torch.as_tensor(x_va, dtype=torch.float32), torch.as_tensor(y_va, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        best_loss, best_state, best_epoch, epoch = float("inf"), None, 0, 0
        for epoch in range(1, config.max_epochs + 1):
            net.train()
            perm = torch.randperm(len(tr_x), generator=gen)
            for i in range(0, len(perm), config.batch_size):
                idx = perm[i : i + config.batch_size]
                loss = loss_fn(net(tr_x[idx]).squeeze(1), tr_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(net(va_x).squeeze(1), va_y))
            if val_loss < best_loss:
                best_loss, best_state, best_epoch = val_loss, copy.deepcopy(net.state_dict()), epoch
            elif epoch - best_epoch >= config.patience:
                break
        if best_state is None:
            raise MetricError(f"the classifier's validation loss was never finite in {epoch} epochs")
        net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():
            p_va = torch.sigmoid(net(va_x).squeeze(1)).double().numpy()
            p_te = torch.sigmoid(net(torch.as_tensor(x_te, dtype=torch.float32)).squeeze(1)).double().numpy()
    return p_va, p_te, best_epoch, epoch


def _train_gbdt(x_tr, y_tr, x_va, y_va, x_te, config: ClassifierConfig, seed: int):
    """Gradient-boosted trees, early-stopped on the calibration part; its probabilities there and on the report part, best and last iteration."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x_tr, x_va, x_te = standardise(x_tr, x_va, x_te)  # fills NaN (empty layers) as for the MLP; trees ignore the scale
    model = HistGradientBoostingClassifier(
        learning_rate=config.tree_lr,
        max_iter=config.max_trees,
        max_leaf_nodes=config.tree_leaves,
        min_samples_leaf=config.tree_min_leaf,
        l2_regularization=config.tree_l2,
        early_stopping=True,
        n_iter_no_change=config.tree_patience,
        random_state=seed,
    )
    model.fit(x_tr, y_tr, X_val=x_va, y_val=y_va)
    # the model keeps tree_patience trees past its best iteration; predict with the best one's ensemble
    epochs = int(model.n_iter_)
    scores = np.asarray(model.validation_score_)  # minus the calibration loss before any tree, then after each
    best = max(1, min(int(np.argmax(scores)), epochs))

    def at_best(x: np.ndarray) -> np.ndarray:
        for i, p in enumerate(model.staged_predict_proba(x), start=1):
            if i == best:
                return p[:, 1]
        raise AssertionError("unreachable: best <= n_iter_")

    return at_best(x_va), at_best(x_te), best, epochs


class _Threads:
    """Limit torch's threads and OpenMP pools (the trees) to ``n`` inside a with block; ``None`` changes nothing."""

    def __init__(self, n: int | None, model: str) -> None:
        self.n, self.model, self._restore = n, model, None

    def __enter__(self):
        if self.n is None:
            return self
        if self.model == "mlp":
            import torch

            old = torch.get_num_threads()
            torch.set_num_threads(self.n)
            self._restore = lambda: torch.set_num_threads(old)
        else:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=self.n)
            self._restore = limits.restore_original_limits
        return self

    def __exit__(self, *exc) -> None:
        if self._restore is not None:
            self._restore()


def _as_features(s, what: str, level: str, threshold: float) -> np.ndarray:
    x = classifier_features(s, level, threshold) if isinstance(s, ShowerData) else np.asarray(s, dtype=np.float64)
    if x.ndim != 2:
        raise MetricError(f"{what}: classifier features must be (N, d), got shape {x.shape}")
    if np.isinf(x).any() or (level != "high" and np.isnan(x).any()):
        raise MetricError(f"{what}: NaN or inf in the cells or conditions; the classifier needs finite showers")
    return x


def classifier_test(
    reference,
    candidate,
    *,
    level: str = "low",
    config: ClassifierConfig | None = None,
    seed: int = 0,
    threshold: float = 0.0,
) -> ClassifierResult:
    """Train classifiers to tell ``candidate`` from ``reference`` and report their calibrated AUC averaged over runs.

    ``reference`` and ``candidate`` are ``ShowerData`` (features by ``classifier_features``
    at ``level``) or (N, d) feature arrays. ``config`` defaults to ``default_classifier(level)``.
    Both samples are cut to the same number of showers n = min(N_ref, N_cand,
    ``max_per_class``) at random; each run splits them (module docstring), trains, picks the
    best epoch and calibrates on the calibration part and measures the AUC and JSD on the
    report part. 0.5 means the classifier cannot tell the samples apart. The same ``seed``
    gives the same result.
    """
    config = default_classifier(level) if config is None else config
    if level not in LEVELS:
        default_classifier(level)  # raises the error naming the levels
    xs = [_as_features(s, what, level, threshold) for what, s in (("reference", reference), ("candidate", candidate))]
    if xs[0].shape[1] != xs[1].shape[1]:
        raise MetricError(f"reference has {xs[0].shape[1]} features, candidate {xs[1].shape[1]}")
    rng = np.random.default_rng(seed)
    n = min(len(xs[0]), len(xs[1]), config.max_per_class or len(xs[0]))
    if n * min(config.splits) < 5:
        raise MetricError(f"the classifier test needs at least {math.ceil(5 / min(config.splits))} showers per sample, got {n}")
    xs = [x[np.sort(rng.choice(len(x), n, replace=False))] if len(x) > n else x for x in xs]
    parts = [_run_parts(n, config.splits, config.n_runs, rng) for _ in xs]
    train = _train_mlp if config.model == "mlp" else _train_gbdt

    aucs, raws, jsds, best, last = [], [], [], [], []
    t0 = time.perf_counter()
    with _Threads(config.threads, config.model):
        for r in range(config.n_runs):
            sets = []
            for k in range(3):
                i0, i1 = parts[0][r][k], parts[1][r][k]
                sets.append((np.concatenate([xs[0][i0], xs[1][i1]]), np.concatenate([np.zeros(len(i0)), np.ones(len(i1))])))
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = sets
            p_va, p_te, b, e = train(x_tr, y_tr, x_va, y_va, x_te, config, seed * 1009 + r)
            p_cal = isotonic_fit(p_va, y_va)(p_te)
            bce = -np.mean(y_te * np.log(p_cal) + (1 - y_te) * np.log(1 - p_cal))
            aucs.append(auc(y_te, p_cal))
            raws.append(auc(y_te, p_te))
            jsds.append(float((math.log(2) - bce) / math.log(2)))
            best.append(b)
            last.append(e)
    seconds = time.perf_counter() - t0

    mean = float(np.mean(aucs))
    n_report = len(parts[1][0][2])
    if config.n_runs == 1:
        spread, sigma = float("nan"), _auc_uncertainty(mean, n_report, len(parts[0][0][2]))
    else:
        spread = float(np.std(aucs, ddof=1))
        n_eff = min(n, config.n_runs * n_report)
        sigma = math.sqrt(spread**2 / config.n_runs + _auc_uncertainty(mean, n_eff, n_eff) ** 2)
    sizes = [len(parts[0][0][k]) + len(parts[1][0][k]) for k in range(3)]
    return ClassifierResult(
        auc=mean,
        auc_uncertainty=sigma,
        jsd=float(np.mean(jsds)),
        auc_raw=float(np.mean(raws)),
        best_epoch=int(np.median(best)),
        epochs=int(np.median(last)),
        n_train=sizes[0],
        n_val=sizes[1],
        n_test=sizes[2],
        seconds=seconds,
        auc_std=spread,
        auc_runs=tuple(float(a) for a in aucs),
        n_runs=config.n_runs,
        n_per_class=n,
        model=config.model,
        features=level,
    )


def classifier_auc(
    reference, candidate, *, level: str = "low", config: ClassifierConfig | None = None, seed: int = 0, threshold: float = 0.0
) -> Measurement:
    """Calibrated, run-averaged AUC of the classifier test (``classifier_test``) with its uncertainty.

    An AUC means little without its floor: quote ``classifier_with_floor`` (or the floor
    of ``calogan.evaluation``) beside it.
    """
    return classifier_test(reference, candidate, level=level, config=config, seed=seed, threshold=threshold).measurement


def low_level_auc(
    reference: ShowerData, candidate: ShowerData, *, fast: bool = False, seed: int = 0, threshold: float = 0.0
) -> ClassifierResult:
    """The headline low-level classifier test of ``candidate`` against ``reference``, for scripts and training loops.

    The ``"low"`` features and the default trees of ``classifier_test``: five runs on at
    most 20,000 showers per class. ``fast=True`` is meant for choosing checkpoints during
    training: one run on at most 5,000 showers per class with at most 100 trees, a few
    seconds on one core for the CaloGAN geometry; its uncertainty is that run's
    Hanley-McNeil error. Compare AUCs of one setting only, and keep the reference showers
    out of training.

    >>> # best = min(checkpoints, key=lambda c: low_level_auc(validation, generate(c), fast=True).auc)
    """
    config = default_classifier("low")
    if fast:
        config = replace(config, n_runs=1, max_per_class=5000, max_trees=100)
    return classifier_test(reference, candidate, level="low", config=config, seed=seed, threshold=threshold)


def classifier_with_floor(
    reference: ShowerData,
    candidate: ShowerData,
    *,
    level: str = "low",
    config: ClassifierConfig | None = None,
    seed: int = 0,
    threshold: float = 0.0,
) -> tuple[ClassifierResult, ClassifierResult]:
    """The classifier test of ``candidate`` and its floor: (candidate vs reference half A, half B vs half A).

    The reference is split at random into halves A and B; all three samples are cut to the
    same number of showers n = min(|A|, |B|, |candidate|) so that the candidate's AUC and
    the floor, the AUC an indistinguishable candidate reaches, have the same statistics.
    ``auc_excess(result, floor)`` says how far above the floor the candidate sits.
    ``calogan.evaluation`` follows the same protocol with one floor for all candidates.
    """
    half_a, half_b = reference.split((0.5, 0.5), seed=seed)
    n = min(len(half_a), len(half_b), len(candidate))
    rng = np.random.default_rng(seed + 17)

    def cut(d: ShowerData) -> ShowerData:
        return d if len(d) <= n else d.select(np.sort(rng.choice(len(d), n, replace=False)))

    a = cut(half_a)
    kwargs = dict(level=level, config=config, seed=seed, threshold=threshold)
    floor = classifier_test(a, cut(half_b), **kwargs)
    return classifier_test(a, cut(candidate), **kwargs), floor
