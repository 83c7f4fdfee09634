"""Figures of a validation report (drawing only): histograms with ratio panels, mean images, resolution curves.

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot`` (no global
backend or style is touched); ``to_data_uri`` renders it as an embeddable PNG. The
reference sample is always the first entry, drawn as a grey filled histogram; candidates
are coloured lines. Import this module inside command handlers only: it imports matplotlib.
"""

from __future__ import annotations

import base64
import functools
import io
import math

import numpy as np
from matplotlib import colors, ticker
from matplotlib.figure import Figure

from calogan import metrics as m
from calogan.geometry import Geometry
from calogan.observables import observable_label

__all__ = [
    "COLOURS",
    "condition_figure",
    "histogram_grid",
    "mean_images_figure",
    "nearest_pairs_figure",
    "nn_distance_figure",
    "profiles_figure",
    "resolution_figure",
    "spectrum_figure",
    "to_data_uri",
]

REFERENCE_COLOUR = "0.55"
COLOURS = ("#1f6fb4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
_FONT = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8}
# Layers shown side by side at most in image figures (a 25-layer voxel block would be unreadable).
MAX_IMAGE_LAYERS = 6
# y range of the ratio panels under the histograms; ratios beyond it are drawn as triangles at its edge
RATIO_RANGE = (0.5, 1.5)
# decades shown at most on the log x axis of a heavy-tailed observable (smaller values count in the first bin)
LOG_DECADES = 3.0


def _colour(i: int) -> str:
    """Colour of sample i (0 = reference)."""
    return REFERENCE_COLOUR if i == 0 else COLOURS[(i - 1) % len(COLOURS)]


def _styled(draw):
    """Run a drawing function inside the report's font sizes, leaving the global rcParams alone."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_FONT):
            return draw(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height))


def to_data_uri(fig: Figure, dpi: int = 80, *, tight: bool = True) -> str:
    """PNG of ``fig`` as a ``data:image/png;base64,...`` URI; ``tight=False`` skips the extra layout pass of a tight box."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ratio_panel(ax, centres: np.ndarray, ref_counts: np.ndarray, counts: list[np.ndarray], ref_label: str) -> None:
    n_ref = ref_counts.sum()
    p_ref = ref_counts / max(n_ref, 1.0)
    for i, c in enumerate(counts, start=1):
        n = c.sum()
        if n == 0 or n_ref == 0:  # nothing to divide: an empty ratio panel
            continue
        p = c / n
        ok = (ref_counts > 0) & (c > 0)
        ratio = np.full_like(p, np.nan)
        ratio[ok] = p[ok] / p_ref[ok]
        err = np.full_like(p, np.nan)
        err[ok] = ratio[ok] * np.sqrt(1 / c[ok] + 1 / ref_counts[ok])  # Poisson errors of both histograms
        # markers plus one line collection: an order of magnitude fewer artists than errorbar
        ax.plot(centres, ratio, "o", ms=1.8, color=_colour(i))
        ax.vlines(centres[ok], (ratio - err)[ok], (ratio + err)[ok], lw=0.8, color=_colour(i))
        # significant ratios beyond the panel as triangles at its edge, so no large difference goes unseen: off-scale by
        # more than twice their error, or a bin one sample leaves empty where the other predicts at least 5 entries
        with np.errstate(invalid="ignore"):
            far = ok & (np.abs(ratio - 1) > 2 * err)
            above = (far & (ratio > RATIO_RANGE[1])) | ((ref_counts == 0) & (c * n_ref / n >= 5))
            below = (far & (ratio < RATIO_RANGE[0])) | ((c == 0) & (ref_counts * n / n_ref >= 5))
        ax.plot(centres[above], np.full(above.sum(), RATIO_RANGE[1] - 0.06), "^", ms=3, color=_colour(i))
        ax.plot(centres[below], np.full(below.sum(), RATIO_RANGE[0] + 0.06), "v", ms=3, color=_colour(i))
    ax.axhline(1.0, color="k", lw=0.7)
    ax.set_ylim(*RATIO_RANGE)
    ax.set_yticks([0.75, 1.0, 1.25])  # no label at the edges, where it would collide with the panel above
    ax.set_ylabel(f"/ {ref_label}" if len(ref_label) <= 10 else "ratio")


def _hist_panel(
    fig: Figure,
    spec,
    values: list[np.ndarray],
    labels: list[str],
    edges: np.ndarray,
    xlabel: str,
    notes: list[str] | None,
    logy: bool = False,
    zero_shares: list[float] | None = None,
) -> None:
    """Normalised histograms over a ratio panel; ``zero_shares`` (one per sample) marks a log x axis whose zeros are not drawn."""
    inner = spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.06)
    ax = fig.add_subplot(inner[0])
    rax = fig.add_subplot(inner[1])  # not sharex: the main panel then needs no x ticks, and ticks are most of the drawing time
    centres = 0.5 * (edges[:-1] + edges[1:]) if zero_shares is None else np.sqrt(edges[:-1] * edges[1:])  # geometric on a log axis
    counts = [m.histogram(v, edges) for v in values]
    for i, c in enumerate(counts):
        total = c.sum()
        frac = c / total if total > 0 else c
        if i == 0:
            ax.stairs(frac, edges, fill=True, color=REFERENCE_COLOUR, alpha=0.45, label=labels[0])
            ax.stairs(frac, edges, color="0.35", lw=0.8)
        else:
            ax.stairs(frac, edges, color=_colour(i), lw=1.3, label=labels[i])
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.25 * max(float((c / max(c.sum(), 1)).max()) for c in counts))  # headroom for the notes
    ax.set_ylabel("fraction")
    if zero_shares is not None:  # log x: geometric bins; the share of zeros, which a log axis cannot show, in the corner
        ax.set_xscale("log")
        rax.set_xscale("log")
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        for i, share in enumerate(zero_shares if max(zero_shares) > 0 else []):
            colour = "0.3" if i == 0 else _colour(i)
            ax.text(
                0.02, 0.97 - 0.1 * i, f"zeros {100 * share:.1f} %", transform=ax.transAxes, ha="left", va="top", fontsize=7, color=colour
            )
    ax.xaxis.set_major_locator(ticker.NullLocator())
    if not logy:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(4))
    for i, note in enumerate(notes or [], start=1):  # one line per candidate, in its colour
        ax.text(0.98, 0.97 - 0.1 * (i - 1), note, transform=ax.transAxes, ha="right", va="top", fontsize=7, color=_colour(i))
    # limits before the ratio points: a log axis autoscaled to one point has zero width
    ax.set_xlim(edges[0], edges[-1])
    rax.set_xlim(edges[0], edges[-1])
    _ratio_panel(rax, centres, counts[0], counts[1:], labels[0])
    rax.set_xlabel(xlabel)
    rax.xaxis.set_major_locator(ticker.MaxNLocator(5) if zero_shares is None else ticker.LogLocator(numticks=5))


def _heavy_tailed(finite: list[np.ndarray]) -> bool:
    """Whether a sample set is best drawn on a log x axis: no negative values, and the reference's 99.9 % quantile
    above 10 times its median (layer energies of the back layer, E_ratio), which a linear axis squeezes into a few bins.
    Both the reference and the candidates need positive values to draw."""
    if any(x.size == 0 or x.min() < 0 for x in finite) or not (finite[0] > 0).any() or not any((x > 0).any() for x in finite[1:]):
        return False
    median, top = np.quantile(finite[0], [0.5, 0.999])
    return bool(top > 10 * median)


@_styled
def histogram_grid(
    values: list[dict[str, np.ndarray]],
    labels: list[str],
    names: list[str],
    geometry: Geometry,
    *,
    n_bins: int = 40,
    notes: dict[str, list[str]] | None = None,
    ncols: int = 4,
    title: str | None = None,
) -> Figure:
    """Normalised histograms of every observable in ``names``, reference (``values[0]``) against candidates, with ratio panels.

    ``values``: per sample, name -> (N,) arrays (NaN entries are left out). Bins are shared
    by all samples (``metrics.shared_bins`` of the reference and the pooled candidates).
    Heavy-tailed non-negative observables (``_heavy_tailed``) get a log x axis with bins
    equal in log x; their zeros are left out of the histogram and their share printed.
    ``notes``: name -> one short text per candidate, printed in the panel in its colour.
    """
    nrows = max(1, math.ceil(len(names) / ncols))
    height = 2.9 * nrows + 0.5
    fig = _figure(3.3 * ncols, height)
    # margins in inches: the legend above, the last row's tick labels and axis label (about 0.45 in) below
    outer = fig.add_gridspec(nrows, ncols, hspace=0.42, wspace=0.32, top=1 - 0.45 / height, bottom=0.6 / height, left=0.06, right=0.98)
    for k, name in enumerate(names):
        vals = [v[name] for v in values]
        finite = [x[np.isfinite(x)] for x in vals]
        spec = outer[k // ncols, k % ncols]
        label = observable_label(name, geometry)
        if finite[0].size == 0 or sum(x.size for x in finite[1:]) == 0:
            ax = fig.add_subplot(spec)
            ax.text(0.5, 0.5, f"{label}\nno defined values", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        if _heavy_tailed(finite):
            positive = [x[x > 0] for x in finite]
            shares = [1.0 - p.size / x.size if x.size else float("nan") for p, x in zip(positive, finite)]
            logs = [np.log10(p) for p in positive]
            log_edges = m.shared_bins(logs[0], np.concatenate(logs[1:]), n_bins)
            if log_edges[-1] - log_edges[0] > LOG_DECADES:  # a few tiny deposits would stretch the axis over many empty decades
                log_edges = np.linspace(log_edges[-1] - LOG_DECADES, log_edges[-1], n_bins + 1)
            edges = 10.0**log_edges
            _hist_panel(fig, spec, positive, labels, edges, label, (notes or {}).get(name), zero_shares=shares)
            continue
        edges = m.shared_bins(finite[0], np.concatenate(finite[1:]), n_bins)
        _hist_panel(fig, spec, finite, labels, edges, label, (notes or {}).get(name))
    handles, legend_labels = fig.axes[0].get_legend_handles_labels() if fig.axes else ([], [])
    if handles:
        fig.legend(handles, legend_labels, loc="upper center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, 1.0))
    if title:
        fig.suptitle(title, y=1.02, fontsize=11)
    return fig


@_styled
def spectrum_figure(spectra: list[np.ndarray], labels: list[str], *, n_bins: int = 60) -> Figure:
    """Cell-energy spectrum: log10 of the energies of all cells above threshold, pooled over showers, with a ratio panel."""
    fig = _figure(6.0, 4.2)
    logs = [np.log10(s[s > 0]) for s in spectra]
    if logs[0].size == 0 or sum(x.size for x in logs[1:]) == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no cell above threshold", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    edges = m.shared_bins(logs[0], np.concatenate(logs[1:]), n_bins, tail=0.0)
    spec = fig.add_gridspec(1, 1)[0]
    _hist_panel(fig, spec, logs, labels, edges, "log10(cell energy / MeV)", None, logy=True)
    fig.axes[0].legend(loc="upper right", frameon=False)
    fig.axes[0].set_ylabel("fraction of cells")
    return fig


def _image_layers(images: list[list[np.ndarray]], geometry: Geometry) -> list[int]:
    """Indices of the layers to draw: all, or the MAX_IMAGE_LAYERS with the most reference energy, in order."""
    if geometry.n_layers <= MAX_IMAGE_LAYERS:
        return list(range(geometry.n_layers))
    energy = [img.sum() for img in images[0]]
    return sorted(np.argsort(energy)[::-1][:MAX_IMAGE_LAYERS].tolist())


def _extent(layer) -> list[float] | None:
    """imshow extent in mm with x (rows) vertical and y (columns) horizontal, for cartesian layers."""
    if layer.binning != "cartesian":
        return None
    rows, cols = layer.shape
    hx, hy = 0.5 * rows * layer.cell_size[0], 0.5 * cols * layer.cell_size[1]
    return [-hy, hy, -hx, hx]


@_styled
def mean_images_figure(images: list[list[np.ndarray]], labels: list[str], geometry: Geometry) -> Figure:
    """Mean energy per cell, one row per sample and one column per layer (log colour scale shared per layer),
    followed by one row per candidate of the ratio candidate / reference."""
    shown = _image_layers(images, geometry)
    n_s = len(images)
    n_rows = n_s + (n_s - 1)
    fig = Figure(figsize=(3.3 * len(shown) + 0.8, 2.9 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, len(shown), squeeze=False)
    ratio_norm = colors.TwoSlopeNorm(vmin=0.5, vcenter=1.0, vmax=1.5)
    for j, li in enumerate(shown):
        layer = geometry.layers[li]
        stack = np.stack([img[li] for img in images])
        positive = stack[stack > 0]
        vmax = float(stack.max()) if positive.size else 1.0
        vmin = max(float(positive.min()), vmax * 1e-5) if positive.size else 1e-3
        norm = colors.LogNorm(vmin=vmin, vmax=vmax)
        extent = _extent(layer)
        aspect = "auto" if extent is None else "equal"
        im = None
        for i in range(n_s):
            img = np.where(stack[i] > 0, stack[i], np.nan)
            im = axes[i, j].imshow(img, norm=norm, cmap="viridis", extent=extent, origin="lower", aspect=aspect, interpolation="nearest")
            axes[i, j].set_title(f"{labels[i]}: {layer.name} ({layer.shape[0]}×{layer.shape[1]})")
        fig.colorbar(im, ax=axes[:n_s, j].tolist(), shrink=0.6, label="mean cell energy [MeV]")
        rim = None
        for i in range(1, n_s):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(stack[0] > 0, stack[i] / stack[0], np.nan)
            ax = axes[n_s + i - 1, j]
            rim = ax.imshow(ratio, norm=ratio_norm, cmap="RdBu_r", extent=extent, origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_title(f"{labels[i]} / {labels[0]}: {layer.name}")
        if rim is not None:
            fig.colorbar(rim, ax=axes[n_s:, j].tolist(), shrink=0.8, label="ratio of mean energies")
        for i in range(n_rows):
            ax = axes[i, j]
            if i == n_rows - 1:
                ax.set_xlabel("radial bin" if extent is None else "y [mm]")
            if j == 0:
                ax.set_ylabel("azimuthal bin" if extent is None else "x [mm]")
    return fig


@_styled
def resolution_figure(resolution: list[dict[str, np.ndarray]], fits: list[dict], labels: list[str]) -> Figure:
    """Mean response E_tot/E_inc and resolution σ/E versus incident energy, with the fits σ/E = a/√E ⊕ b and ratio panels."""
    fig = _figure(11.0, 5.2)
    gs = fig.add_gridspec(2, 2, height_ratios=(3, 1), hspace=0.06, wspace=0.28)
    panels = (("response", "response_unc", "⟨E_tot / E_inc⟩"), ("resolution", "resolution_unc", "σ_eff / mean of E_tot / E_inc"))
    e_max = np.nanmax(resolution[0]["energy"]) if np.isfinite(resolution[0]["energy"]).any() else 1.0
    e_min = np.nanmin(resolution[0]["energy"]) if np.isfinite(resolution[0]["energy"]).any() else 0.1
    for col, (key, ukey, ylabel) in enumerate(panels):
        ax = fig.add_subplot(gs[0, col])
        rax = fig.add_subplot(gs[1, col], sharex=ax)
        ref = resolution[0]
        for i, (r, fit) in enumerate(zip(resolution, fits)):
            shift = 1 + 0.012 * (i - (len(resolution) - 1) / 2)  # spread markers so error bars do not overlap
            label = labels[i]
            if key == "resolution":
                a, b = fit["a"], fit["b"]
                if math.isfinite(a.value):  # the fitted values are in the report's table; the legend stays short
                    grid = np.geomspace(max(e_min * 0.8, 1e-3), e_max * 1.1, 200)
                    ax.plot(grid, np.sqrt(a.value**2 / grid + b.value**2), ls="--", lw=1.0, color=_colour(i) if i else "0.3")
            ax.errorbar(r["energy"] * shift, r[key], yerr=r[ukey], fmt="o", ms=3.5, lw=1, color=_colour(i) if i else "0.3", label=label)
            if i:
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = r[key] / ref[key]
                    err = ratio * np.sqrt((r[ukey] / r[key]) ** 2 + (ref[ukey] / ref[key]) ** 2)
                rax.errorbar(r["energy"] * shift, ratio, yerr=err, fmt="o", ms=3, lw=1, color=_colour(i))
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False, loc="lower left" if key == "resolution" else "best")
        rax.axhline(1.0, color="k", lw=0.7)
        lo, hi = (0.9, 1.1) if key == "response" else (0.6, 1.4)
        rax.set_ylim(lo, hi)
        rax.set_ylabel(f"/ {labels[0]}" if len(labels[0]) <= 10 else "ratio")
        rax.set_xlabel("incident energy E_inc [GeV]")
        rax.grid(alpha=0.3, which="both")
    return fig


@_styled
def profiles_figure(profiles: list[dict[str, np.ndarray]], labels: list[str], floor: float = 0.01) -> Figure:
    """Mean longitudinal profile (energy per layer) and radial profile (energy per ring of transverse distance),
    log scale, with ratio panels; bins where the reference is below ``floor`` of its peak are shaded."""
    fig = _figure(11.0, 5.2)
    gs = fig.add_gridspec(2, 2, height_ratios=(3, 1), hspace=0.06, wspace=0.28)
    edges = profiles[0]["radial_edges"]
    n_layers = profiles[0]["longitudinal"].size
    axes_x = {
        "longitudinal": (np.arange(n_layers, dtype=float), "layer index", "⟨E⟩ per layer [MeV]"),
        "radial": (0.5 * (edges[:-1] + edges[1:]), "transverse distance from the beam axis r [mm]", "⟨E⟩ per ring [MeV]"),
    }
    for col, (key, (x, xlabel, ylabel)) in enumerate(axes_x.items()):
        ax = fig.add_subplot(gs[0, col])
        rax = fig.add_subplot(gs[1, col], sharex=ax)
        ref, ref_unc = profiles[0][key], profiles[0][f"{key}_unc"]
        for i, p in enumerate(profiles):
            y, u = p[key], p[f"{key}_unc"]
            ax.errorbar(
                x,
                np.where(y > 0, y, np.nan),
                yerr=u,
                fmt="o-" if i else "s-",
                ms=3,
                lw=1,
                color=_colour(i) if i else "0.3",
                label=labels[i],
            )
            if i:
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = y / ref
                    err = np.abs(ratio) * np.sqrt((u / y) ** 2 + (ref_unc / ref) ** 2)
                rax.errorbar(x, ratio, yerr=err, fmt="o", ms=3, lw=1, color=_colour(i))
        low = ref < floor * ref.max() if ref.max() > 0 else np.ones(ref.shape, bool)
        step = np.diff(x).min() if x.size > 1 else 1.0
        for a in (ax, rax):
            for xi in x[low]:
                a.axvspan(xi - 0.5 * step, xi + 0.5 * step, color="0.92", lw=0)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False)
        rax.axhline(1.0, color="k", lw=0.7)
        for level in (0.9, 1.1):
            rax.axhline(level, color="k", lw=0.5, ls=":")
        rax.set_ylim(0.7, 1.3)
        rax.set_ylabel(f"/ {labels[0]}" if len(labels[0]) <= 10 else "ratio")
        rax.set_xlabel(xlabel)
        rax.grid(alpha=0.3, which="both")
    return fig


@_styled
def condition_figure(
    conditions: list[dict[str, np.ndarray]],
    observables: list[dict[str, np.ndarray]],
    trends: list[dict],
    labels: list[str],
    geometry: Geometry,
    pairs: tuple[tuple[str, str], ...],
    *,
    n_bins: int = 10,
) -> Figure:
    """Observables against conditions, one row per (observable key, condition) pair and one column per layer.

    Each panel shows the mean of the observable in ``n_bins`` equal bins of the condition
    (error bars: standard error of the mean) for the reference (grey) and each candidate,
    with the least-squares line of ``trends`` (``evaluation.condition_trends``) dashed and its
    slope in the legend. ``conditions[i]`` and ``observables[i]`` are sample i's per-shower
    arrays; θ is drawn in degrees.
    """
    rows = [(key, cond) for key, cond in pairs if cond in conditions[0]]
    n_layers = geometry.n_layers
    fig = _figure(3.6 * n_layers, 2.7 * max(len(rows), 1))
    for r, (key, cond) in enumerate(rows):
        scale = 180.0 / math.pi if cond == "theta" else 1.0
        x_ref = conditions[0][cond]
        edges = np.linspace(np.min(x_ref), np.max(x_ref), n_bins + 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        for j, layer in enumerate(geometry.layers):
            ax = fig.add_subplot(len(rows), n_layers, r * n_layers + j + 1)
            name = f"{key}_{layer.name}"
            for i, (c, o, t) in enumerate(zip(conditions, observables, trends)):
                if cond not in c:
                    continue
                x, y = c[cond], o[name]
                ok = np.isfinite(y)
                idx = np.clip(np.searchsorted(edges, x[ok], side="right") - 1, 0, n_bins - 1)
                n = np.bincount(idx, minlength=n_bins)
                s1 = np.bincount(idx, weights=y[ok], minlength=n_bins)
                s2 = np.bincount(idx, weights=y[ok] ** 2, minlength=n_bins)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = s1 / n
                    err = np.sqrt(np.clip(s2 / n - mean**2, 0, None) / np.maximum(n - 1, 1))
                fit = t.get(f"{name} vs {cond}")
                label = labels[i]
                if fit is not None:
                    slope = fit["slope"]["value"] if isinstance(fit["slope"], dict) else fit["slope"].value
                    label += f" (slope {slope / scale:.3g})"
                    ax.plot(edges * scale, fit["intercept"] + slope * edges, ls="--", lw=1.0, color=_colour(i) if i else "0.3")
                shift = (i - (len(conditions) - 1) / 2) * 0.15 * (edges[1] - edges[0])
                ax.errorbar((centres + shift) * scale, mean, yerr=err, fmt="o", ms=3, lw=1, color=_colour(i) if i else "0.3", label=label)
            ax.set_xlabel(f"{cond} [{'deg' if cond == 'theta' else 'mm' if cond in ('x0', 'y0') else 'rad'}]")
            ax.set_ylabel(observable_label(name, geometry))
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


@_styled
def nn_distance_figure(nearest: list[dict], labels: list[str], *, n_bins: int = 50) -> Figure:
    """Distances to the nearest reference (pool) shower: held-out reference showers (grey) and each candidate."""
    fig = _figure(6.5, 4.0)
    ax = fig.add_subplot()
    ref_d = nearest[0]["reference_distances"]
    pooled = np.concatenate([ref_d, *(n["candidate_distances"] for n in nearest)])
    hi = float(np.quantile(pooled, 0.995)) if pooled.size else 1.0
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, n_bins + 1)
    frac = m.histogram(ref_d, edges) / max(len(ref_d), 1)
    ax.stairs(frac, edges, fill=True, color=REFERENCE_COLOUR, alpha=0.45, label=f"held-out {labels[0]}")
    for i, n in enumerate(nearest, start=1):
        d = n["candidate_distances"]
        ax.stairs(m.histogram(d, edges) / max(len(d), 1), edges, color=_colour(i), lw=1.3, label=labels[i])
    ax.axvline(np.quantile(ref_d, 0.01), color="k", ls=":", lw=0.9, label=f"1 % quantile of held-out {labels[0]}")
    ax.set_xlabel("distance to the nearest reference shower (cells / E_inc, Euclidean)")
    ax.set_ylabel("fraction of showers")
    ax.legend(frameon=False)
    return fig


@_styled
def nearest_pairs_figure(
    candidate_cells: np.ndarray, reference_cells: np.ndarray, distances: np.ndarray, geometry: Geometry, labels: tuple[str, str]
) -> Figure:
    """Candidate showers (rows 1, 3, ...) above their nearest reference showers (rows 2, 4, ...), per layer, log colour scale.

    One colour scale per layer (column), shared by all showers drawn in it, so a copied shower
    looks identical to its partner.
    """
    pairs = len(candidate_cells)
    energy = [candidate_cells[:, geometry.layer_slice(i)].sum() for i in range(geometry.n_layers)]
    shown = list(range(geometry.n_layers)) if geometry.n_layers <= 3 else sorted(np.argsort(energy)[::-1][:3].tolist())
    # constrained layout keeps every title clear of the tick labels of the panel above
    fig = Figure(figsize=(3.3 * len(shown) + 0.6, 2.5 * 2 * pairs + 0.3), layout="constrained")
    axes = fig.subplots(2 * pairs, len(shown), squeeze=False)
    cand_layers, ref_layers = geometry.split(candidate_cells), geometry.split(reference_cells)
    for j, li in enumerate(shown):
        layer = geometry.layers[li]
        extent = _extent(layer)
        stack = np.concatenate([cand_layers[li], ref_layers[li]])
        positive = stack[stack > 0]
        vmax = float(stack.max()) if positive.size else 1.0
        norm = colors.LogNorm(vmin=max(float(positive.min()), vmax * 1e-4) if positive.size else 1e-3, vmax=vmax)
        im = None
        for p in range(pairs):
            for r, (cells, who) in enumerate(((cand_layers[li][p], labels[1]), (ref_layers[li][p], f"nearest {labels[0]}"))):
                ax = axes[2 * p + r, j]
                im = ax.imshow(
                    np.where(cells > 0, cells, np.nan),
                    norm=norm,
                    cmap="viridis",
                    extent=extent,
                    origin="lower",
                    aspect="auto",
                    interpolation="nearest",
                )
                title = f"{who} #{p + 1}: {layer.name}" + (f"\nd = {distances[p]:.3g}" if r == 0 else "")
                ax.set_title(title, fontsize=8)
                ax.tick_params(labelsize=6)
                if j == 0:
                    ax.set_ylabel("azimuthal bin" if extent is None else "x [mm]", fontsize=7)
        axes[-1, j].set_xlabel("radial bin" if extent is None else "y [mm]", fontsize=7)
        fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.5, label="cell energy [MeV]")
    return fig
