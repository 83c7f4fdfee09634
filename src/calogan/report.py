"""The validation report: a self-contained ``report.html`` and ``metrics.json``, written atomically.

``render_html(evaluation)`` lays out an ``Evaluation`` as a physics validation page:
samples, a summary table (classifier AUCs beside their floors, FPD, KPD, E_tot χ²), mean
images, response and resolution, every observable overall and per incident-energy bin,
the cell-energy spectrum, classifier details, nearest neighbours and definitions. Figures
are embedded as base64 PNG and the style sheet is inline: the page loads nothing from
anywhere. ``write_report`` writes both files without ever leaving a half-written one.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from calogan import plotting
from calogan.errors import CaloganError
from calogan.evaluation import CONDITION_TRENDS, PROFILE_FLOOR, Evaluation
from calogan.metrics import energy_bin_index
from calogan.runtime import AtomicOutput, atomic_outputs, check_output_folder

__all__ = ["OUTPUT_FILES", "ReportError", "check_output", "format_measurement", "render_html", "write_report"]

OUTPUT_FILES = ("metrics.json", "report.html")


class ReportError(CaloganError, ValueError):
    """An output directory that cannot be written."""


# ---------------------------------------------------------------------------------------
# Output directory policy
# ---------------------------------------------------------------------------------------


def check_output(out_dir: str | Path, force: bool = False, inputs=()) -> Path:
    """Refuse an output directory now rather than after a long evaluation.

    A directory that already holds ``metrics.json`` or ``report.html`` is refused unless
    ``force``; other files in it are never touched. A path that is a file (one of ``inputs``,
    say) is refused, and so is a new directory whose nearest existing parent is not a
    writable directory (``calogan.runtime.check_output_folder``).
    """
    return check_output_folder(out_dir, files=OUTPUT_FILES, force=force, inputs=inputs, error=ReportError)


def _write_files(out: Path, files: dict[str, str], force: bool) -> None:
    """Write text files into ``out`` atomically: a new directory appears whole, in an existing one the files appear together."""
    check_output(out, force)
    if out.is_dir():
        with atomic_outputs([out / name for name in files], force=force, error=ReportError) as pending:
            for output, text in zip(pending, files.values()):
                output.tmp.write_text(text, encoding="utf-8")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with AtomicOutput(out, directory=True, error=ReportError) as folder:
        for name, text in files.items():
            (folder.tmp / name).write_text(text, encoding="utf-8")


def write_report(
    evaluation: Evaluation, out_dir: str | Path, *, force: bool = False, dpi: int = 80, extra: dict[str, str] | None = None
) -> dict[str, Path]:
    """Write ``metrics.json`` and ``report.html`` for ``evaluation`` into ``out_dir``; returns their paths.

    The HTML is rendered before anything is written, and each file is written to a
    temporary name and renamed, so an interrupted run leaves no partial report. ``extra``:
    more files (name -> text) written the same way.
    """
    t0 = time.perf_counter()
    page = render_html(evaluation, dpi=dpi)
    evaluation.metrics["timings_s"]["report"] = round(time.perf_counter() - t0, 3)
    text = json.dumps(evaluation.metrics, indent=1, allow_nan=False)
    out = Path(out_dir)
    files = {"metrics.json": text + "\n", "report.html": page, **(extra or {})}
    _write_files(out, files, force)
    return {name: out / name for name in files}


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def format_measurement(meas: dict | None, scale: float = 1.0) -> str:
    """'value ± uncertainty' with the value rounded to the uncertainty's second significant digit."""
    if not meas or meas.get("value") is None:
        return "–"
    v = meas["value"] * scale
    u = meas.get("uncertainty")
    if u is None or not math.isfinite(u) or u <= 0:
        return f"{v:#.4g}"
    u *= scale
    if abs(v) >= 1e5 or u < 1e-6:
        return f"{v:.3e} ± {u:.1e}"
    decimals = max(0, 1 - math.floor(math.log10(u)))
    return f"{v:.{decimals}f} ± {u:.{decimals}f}"


def _e(text) -> str:
    return html.escape(str(text))


_NUMERIC = re.compile(r"^[-+–]?(\d|\.\d)")


def _td(content: str, raw: bool) -> str:
    """A cell, right-aligned when its text starts with a number."""
    text = re.sub(r"<[^>]*>", "", content) if raw else content
    cls = " class='num'" if _NUMERIC.match(text.strip()) else ""
    return f"<td{cls}>{content if raw else _e(content)}</td>"


def _table(header: list[str], rows: list[list[str]], cls: str = "", raw: bool = False) -> str:
    """HTML table; cells are escaped unless ``raw`` (cells then hold trusted markup)."""
    head = "".join(f"<th>{h if raw else _e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_td(c, raw) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(uri: str, caption: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'


def _compat_class(chi2_ndf: dict | None, ndf: int | float | None) -> str:
    """Colour class from the χ² compatibility: green below 3σ of χ²/ndf = 1, amber below 5σ, red above.

    Colours follow statistical significance, not the size of the separation power, whose
    value for two samples of one distribution grows as the statistics shrink.
    """
    if not chi2_ndf or chi2_ndf.get("value") is None or not ndf:
        return ""
    z = (chi2_ndf["value"] - 1) / math.sqrt(2 / ndf)
    return "good" if z < 3 else "fair" if z < 5 else "bad"


def _mean_class(mean: dict | None) -> str:
    """Colour class of a mean χ²/ndf over observables, from its own uncertainty."""
    if not mean or mean.get("value") is None or not mean.get("uncertainty"):
        return ""
    z = (mean["value"] - 1) / mean["uncertainty"]
    return "good" if z < 3 else "fair" if z < 5 else "bad"


def _auc_cell(entry: dict | None) -> str:
    if entry is None:
        return '<span class="muted">skipped (--fast)</span>'
    excess = entry.get("excess_sigma")
    cls = "" if excess is None else ("good" if excess < 2 else "fair" if excess < 5 else "bad")
    return f'<span class="{cls}">{_e(format_measurement(entry["auc"]))}</span><br><span class="muted">floor {_e(format_measurement(entry["floor"]))}</span>'


CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0; color: #1d2327; background: #f4f5f7; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 64px; background: white; }
header { border-bottom: 3px solid #1f6fb4; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #d0d4d9; padding-bottom: 4px; }
h3 { font-size: 16px; margin-top: 22px; }
.meta { color: #55606b; font-size: 13px; margin: 4px 0 12px; }
table { border-collapse: collapse; margin: 10px 0 6px; font-size: 13px; }
th, td { border: 1px solid #d0d4d9; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f5; text-align: center; }
td.num { text-align: right; white-space: nowrap; }
table.wide td, table.wide th { padding: 3px 6px; font-size: 12px; }
.good { color: #17752b; font-weight: 600; }
.fair { color: #a66300; font-weight: 600; }
.bad { color: #b3141b; font-weight: 600; }
td.good { background: #e3f4e6; } td.fair { background: #fdf1dc; } td.bad { background: #fbe1e1; }
.muted { color: #7a838c; font-size: 11px; font-weight: normal; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; border: 1px solid #e1e4e8; }
figcaption { font-size: 13px; color: #3b444c; margin-top: 6px; max-width: 1100px; line-height: 1.45; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 8px 12px; margin: 10px 0; font-size: 13px; }
.note { font-size: 13px; color: #3b444c; max-width: 1100px; line-height: 1.45; }
details { margin: 8px 0; border: 1px solid #d0d4d9; border-radius: 4px; padding: 6px 10px; }
summary { cursor: pointer; font-weight: 600; }
nav ol { columns: 2; font-size: 14px; }
dl { font-size: 13px; max-width: 1100px; } dt { font-weight: 600; margin-top: 8px; } dd { margin-left: 18px; }
"""


# ---------------------------------------------------------------------------------------
# Page sections
# ---------------------------------------------------------------------------------------


def _samples_section(ev: Evaluation) -> str:
    mt = ev.metrics
    rows = []
    for role, s in [("reference", mt["reference"])] + [("candidate", c) for c in mt["candidates"]]:
        rows.append(
            [
                role,
                s["label"],
                s["source"] or "(in memory)",
                str(s["n_showers"]),
                ", ".join(s["particles"]),
                f"{s['e_inc_gev'][0]:.3g} – {s['e_inc_gev'][1]:.3g}",
                ", ".join(s["conditions"]),
            ]
        )
    out = _table(["role", "label", "file", "showers", "particles", "E_inc [GeV]", "conditions"], rows)
    for w in mt["warnings"]:
        out += f'<div class="warn">{_e(w)}</div>'
    return out


def _summary_section(ev: Evaluation) -> str:
    mt = ev.metrics
    fl = mt["floor"]
    rows = []
    for c in mt["candidates"]:
        s = c["summary"]
        rows.append(
            [
                _e(c["label"]),
                _auc_cell(s["classifier_low"]),
                _auc_cell(s["classifier_high"]),
                _auc_cell(s["classifier_low_calochallenge"]),
                f"{_e(format_measurement(s['fpd']))}<br><span class='muted'>floor {_e(format_measurement(fl['fpd']))}</span>",
                f"{_e(format_measurement(s['kpd']))}<br><span class='muted'>floor {_e(format_measurement(fl['kpd']))}</span>",
                _e(format_measurement(s["energy_chi2"])),
                _e(format_measurement(s["separation_power_mean"])),
                f"<span class='{_mean_class(s['chi2_ndf_mean'])}'>{_e(format_measurement(s['chi2_ndf_mean']))}</span>",
                _e(format_measurement(s["nn_ratio"])),
                "<br>".join(_e(n) for n in s["worst_observables"][:3]),
            ]
        )
    header = [
        "candidate",
        "AUC low-level",
        "AUC high-level",
        "AUC CaloChallenge",
        "FPD",
        "KPD",
        "E_tot χ²/ndf",
        "mean separation",
        "mean χ²/ndf",
        "NN ratio",
        "worst observables",
    ]
    n = fl["n_showers_per_class"]
    cap = (
        "<p class='note'>Classifier AUCs are calibrated, measured on held-out showers and averaged over independent runs (section "
        "Classifier tests); the "
        f"<i>floor</i> is the same test between two halves of the reference with the same statistics ({n} showers per class). "
        "Green: within 2σ of the floor; amber: within 5σ; red: beyond (flagged). FPD and KPD compare the high-level observables with "
        "reference half A, their floor is half B against half A. E_tot χ²/ndf: E_tot/E_inc in 10 incident-energy bins "
        "(about 1 when compatible). Mean separation power and χ²/ndf over all observables, all energies (the mean χ²/ndf coloured by "
        "its distance from 1 in units of its uncertainty). NN ratio: median distance "
        "of candidate showers to the nearest reference shower over that of held-out reference showers (≈ 1 expected; ≪ 1 means copies).</p>"
    )
    return _table(header, rows, raw=True) + cap


def _images_section(ev: Evaluation, dpi: int) -> str:
    g = ev.geometry
    labels = [s.label for s in ev.samples]
    fig = plotting.mean_images_figure(ev.mean_images, labels, g)
    shown = plotting._image_layers(ev.mean_images, g)
    note = "" if len(shown) == g.n_layers else f" Shown: the {len(shown)} of {g.n_layers} layers with the most reference energy."
    out = _figure(
        plotting.to_data_uri(fig, dpi, tight=False),  # constrained layout already fits the margins
        "Mean energy per cell of every sample (log colour scale, shared per layer; white: no energy), then the ratio of each "
        "candidate's mean image to the reference's (blue below, red above). Cartesian layers are drawn at their physical size in mm, "
        "x (row index) vertical, y (column index) horizontal." + note,
        "mean shower images per layer",
    )
    rows = [
        [c["label"]] + [format_measurement(c["mean_images"][layer.name]["relative_l1"]) for layer in g.layers]
        for c in ev.metrics["candidates"]
    ]
    out += _table(["candidate"] + [f"{layer.name}: Σ|Δ mean| / Σ mean" for layer in g.layers], rows)
    return out


def _profiles_section(ev: Evaluation, dpi: int) -> str:
    labels = [s.label for s in ev.samples]
    fig = plotting.profiles_figure(ev.profiles, labels, PROFILE_FLOOR)
    out = _figure(
        plotting.to_data_uri(fig, dpi),
        "Left: mean energy per layer (the longitudinal profile). Right: mean energy per ring of transverse distance from the beam "
        "axis, all layers together (the radial profile; each cell counts at its centre). Error bars: standard errors of the means. "
        f"Lower panels: ratio to the reference, dotted at ±10 %; shaded: bins where the reference is below {PROFILE_FLOOR:.0%} of its "
        "peak, left out of the largest deviation in the table.",
        "longitudinal and radial profiles",
    )
    rows = [
        [
            c["label"],
            format_measurement(c["profiles"]["longitudinal"]["max_deviation"], 100),
            str(sum(c["profiles"]["longitudinal"]["compared"])),
            format_measurement(c["profiles"]["radial"]["max_deviation"], 100),
            str(sum(c["profiles"]["radial"]["compared"])),
        ]
        for c in ev.metrics["candidates"]
    ]
    return out + _table(
        ["candidate", "longitudinal: max |ratio − 1| [%]", "layers compared", "radial: max |ratio − 1| [%]", "rings compared"], rows
    )


def _resolution_section(ev: Evaluation, dpi: int) -> str:
    labels = [s.label for s in ev.samples]
    fig = plotting.resolution_figure(ev.resolution, ev.resolution_fits, labels)
    out = _figure(
        plotting.to_data_uri(fig, dpi),
        "Left: mean response E_tot/E_inc versus incident energy. Right: resolution, half the central 68 % interval of E_tot/E_inc "
        "divided by its mean, with the fit σ/E = a/√E ⊕ b (dashed). Points at the mean E_inc of bins equally spaced in log E_inc "
        "(bins with fewer than 10 showers are left out); "
        "error bars from the bootstrap. Lower panels: ratio to the reference.",
        "response and resolution versus energy",
    )
    samples = [ev.metrics["reference"], *ev.metrics["candidates"]]
    rows = [
        [
            s["label"],
            format_measurement(s["resolution_fit"]["a"], 100),
            format_measurement(s["resolution_fit"]["b"], 100),
            _num(s["resolution_fit"]["chi2_ndf"]),
        ]
        for s in samples
    ]
    out += _table(["sample", "a [% √GeV]", "b [%]", "fit χ²/ndf"], rows)
    ref = ev.metrics["reference"]["response"]
    rows = []
    for k, e in enumerate(ref["energy_gev"]):
        row = [_num(e)]
        for s in samples:
            row += [format_measurement(s["response"]["response"][k]), format_measurement(s["response"]["resolution"][k], 100)]
        rows.append(row)
    header = ["⟨E_inc⟩ [GeV]"] + [h for s in samples for h in (f"{s['label']}: response", f"{s['label']}: σ/E [%]")]
    out += f"<details><summary>Response and resolution per energy bin</summary>{_table(header, rows, 'wide')}</details>"
    return out


def _observable_notes(ev: Evaluation, key: str, k: int | None) -> dict[str, str]:
    """Per observable, the separation power of each candidate (for the panel corner)."""
    notes = {}
    for name in (o["name"] for o in ev.metrics["observables"]):
        lines = []
        for c in ev.metrics["candidates"]:
            entry = c["observables"][name][key] if k is None else c["observables"][name][key][k]
            s = None if entry is None else entry["separation_power"]["value"]
            lines.append(f"S = {_num(s, 2)}")
        notes[name] = lines
    return notes


def _observable_table(ev: Evaluation, k: int | None) -> str:
    g = ev.metrics
    cands = g["candidates"]
    header = ["observable"] + [f"{c['label']}: {h}" for c in cands for h in ("separation", "χ²/ndf", "W1")]
    rows = []
    for o in g["observables"]:
        unit = f" [{o['unit']}]" if o["unit"] else ""
        row = [_e(o["name"])]
        for c in cands:
            e = c["observables"][o["name"]]["all"] if k is None else c["observables"][o["name"]]["energy_bins"][k]
            if e is None:
                row += ["–", "–", "–"]
                continue
            und = e["undefined_fraction"]
            flag = f"<br><span class='muted'>undefined {100 * und[0]:.1f} % / {100 * und[1]:.1f} %</span>" if max(und) > 0 else ""
            row += [
                f"<span class='{_compat_class(e['chi2_ndf'], e['ndf'])}'>{_e(format_measurement(e['separation_power']))}</span>"
                f"<br><span class='muted'>null {_num(e['separation_power_null'], 2)}</span>{flag}",
                _e(format_measurement(e["chi2_ndf"])),
                _e(format_measurement(e["wasserstein"]) + unit),
            ]
        rows.append(row)
    return _table(header, rows, "wide", raw=True)


def _observables_section(ev: Evaluation, dpi: int) -> str:
    labels = [s.label for s in ev.samples]
    names = [o["name"] for o in ev.metrics["observables"]]
    n_bins = ev.metrics["settings"]["hist_bins"]
    fig = plotting.histogram_grid(ev.observables, labels, names, ev.geometry, n_bins=n_bins, notes=_observable_notes(ev, "all", None))
    out = _figure(
        plotting.to_data_uri(fig, dpi, tight=False),
        "Every shower observable over all incident energies: normalised histograms (reference filled grey, candidates as lines), "
        "separation power S of each candidate in the corner, and the ratio candidate / reference below with Poisson errors (triangles "
        "at its edge: ratios significantly beyond 0.5–1.5, or bins a sample leaves empty where at least 5 entries are expected). Entries "
        "outside the plotted range (0.1 %–99.9 % quantiles) are counted in the first and last bins. Undefined values (centroid and "
        "width of an empty layer) are left out and counted in the table. Non-negative observables with a long tail (99.9 % quantile "
        "above ten times the median) are drawn on a log axis without their zeros, whose share is printed top left; the separation "
        "power in the corner, like the table, is computed on linear bins with the zeros.",
        "observable histograms, all energies",
    )
    out += "<details><summary>Table: separation power, χ²/ndf and 1-Wasserstein distance per observable</summary>"
    out += (
        "<p class='note'>Separation power S = ½ Σ (p−q)²/(p+q): 0 identical, 1 disjoint; <i>null</i> is the value two samples of one "
        "distribution reach at these statistics. Colours follow the χ² compatibility: green within 3σ of χ²/ndf = 1, amber within 5σ, "
        "red beyond. χ²/ndf: two-sample χ² of the histograms (≈ 1 when compatible). W1 in the observable's unit.</p>"
    )
    out += _observable_table(ev, None) + "</details>"
    return out


def _energy_bins_section(ev: Evaluation, dpi: int) -> str:
    labels = [s.label for s in ev.samples]
    names = [o["name"] for o in ev.metrics["observables"]]
    n_bins = ev.metrics["settings"]["hist_bins"]
    bins = ev.metrics["energy_bins_gev"]
    cands = ev.metrics["candidates"]
    # overview: separation power per observable and energy bin, one block of columns per candidate
    head = "<tr><th rowspan='2'>observable</th>" + "".join(f"<th colspan='{len(bins)}'>{_e(c['label'])}</th>" for c in cands) + "</tr>"
    head += "<tr>" + "".join(f"<th>{lo:.3g}–{hi:.3g}</th>" for _ in cands for lo, hi in bins) + "</tr>"
    body = ""
    for name in names:
        body += f"<tr><td>{_e(name)}</td>"
        for c in cands:
            for e in c["observables"][name]["energy_bins"]:
                if e is None:
                    body += "<td>–</td>"
                else:
                    cls = _compat_class(e["chi2_ndf"], e["ndf"])
                    body += f"<td class='num {cls}'>{_num(e['separation_power']['value'], 2)}</td>"
        body += "</tr>"
    null = [e["separation_power_null"] for c in cands for name in names for e in c["observables"][name]["energy_bins"] if e]
    out = (
        "<p class='note'>Separation power of every observable in every incident-energy bin (columns: E_inc in GeV). Colours follow "
        "the χ² compatibility of the histograms: green within 3σ of χ²/ndf = 1, amber within 5σ, red beyond. Two samples of one "
        f"distribution reach S ≈ {_num(min(null, default=None), 2)}–{_num(max(null, default=None), 2)} at these statistics. "
        "Open a bin below for its histograms and full table.</p>"
    )
    out += f"<table class='wide'><thead>{head}</thead><tbody>{body}</tbody></table>"
    bin_of = [energy_bin_index(d.e_inc, ev.energy_edges) for d in ev.summaries]
    for k, (lo, hi) in enumerate(bins):
        counts = [int((b == k).sum()) for b in bin_of]
        if min(counts) == 0:
            out += f"<details><summary>{lo:.3g} – {hi:.3g} GeV: no showers in {', '.join(lab for lab, n in zip(labels, counts) if n == 0)}</summary></details>"
            continue
        values = [{n: v[n][b == k] for n in names} for v, b in zip(ev.observables, bin_of)]
        fig = plotting.histogram_grid(values, labels, names, ev.geometry, n_bins=n_bins, notes=_observable_notes(ev, "energy_bins", k))
        summary = f"E_inc {lo:.3g} – {hi:.3g} GeV: " + ", ".join(f"{lab} {n} showers" for lab, n in zip(labels, counts))
        out += f"<details><summary>{_e(summary)}</summary>"
        out += _figure(
            plotting.to_data_uri(fig, dpi, tight=False), _e(f"Observables for {lo:.3g} ≤ E_inc < {hi:.3g} GeV, as in section 5."), summary
        )
        out += _observable_table(ev, k) + "</details>"
    return out


def _spectrum_section(ev: Evaluation, dpi: int) -> str:
    labels = [s.label for s in ev.samples]
    fig = plotting.spectrum_figure(ev.spectra, labels)
    thr = ev.metrics["settings"]["threshold_mev"]
    out = _figure(
        plotting.to_data_uri(fig, dpi),
        f"Energies of all cells above the threshold ({thr:g} MeV), pooled over showers and normalised to the number of such cells.",
        "cell energy spectrum",
    )
    rows = [
        [c["label"], format_measurement(c["cell_spectrum"]["separation_power"]), format_measurement(c["cell_spectrum"]["chi2_ndf"])]
        for c in ev.metrics["candidates"]
    ]
    out += _table(["candidate", "separation power", "χ²/ndf"], rows)
    out += "<p class='note'>Cells of one shower are correlated, so these uncertainties (from cell counts) are too small.</p>"
    return out


def _classifier_section(ev: Evaluation) -> str:
    mt = ev.metrics
    if not mt["settings"]["classifiers"]:
        return "<p class='note'>Skipped (<code>--fast</code>).</p>"
    names = {"low": "low-level", "high": "high-level", "low_calochallenge": "CaloChallenge low-level"}
    rows = []
    for level, name in names.items():
        key = f"classifier_{level}"
        cfg = mt["settings"]["classifier"][level]
        entries = [("floor: reference B vs A", mt["floor"][key], None)] + [
            (c["label"], c["summary"][key], c["summary"][key]) for c in mt["candidates"]
        ]
        for label, r, cand in entries:
            rows.append(
                [
                    f"{name} ({cfg['model']})",
                    label,
                    format_measurement(r["auc"]),
                    f"{_num(r['auc_std'])} ({r['n_runs']})",
                    _num(r["auc_raw"]),
                    "–" if cand is None else _num(cand["excess_sigma"], 2),
                    _num(r["jsd"]),
                    f"{r['best_epoch']} / {r['epochs']}",
                    f"{r['n_train']} / {r['n_val']} / {r['n_test']}",
                    f"{r['seconds']:.1f}",
                ]
            )
    out = _table(
        [
            "test",
            "sample vs reference A",
            "AUC (calibrated, mean of runs)",
            "spread of runs (runs)",
            "AUC raw",
            "(AUC − floor)/σ",
            "JSD",
            "best / last epoch or tree",
            "train / calibration / report",
            "train s",
        ],
        rows,
    )
    out += (
        "<p class='note'>Protocol after the CaloChallenge (arXiv:2410.21611): 60 % of each class trains the classifier, the next "
        "20 % early-stops it and fits an isotonic calibration, the last 20 % measures the AUC; runs rotate these parts over five "
        "folds, so five runs report on every shower once, and the AUC is their mean. σ combines the spread of the runs (s²/runs) "
        "with the Hanley-McNeil error of one AUC on all showers of a class, which repeated runs on the same showers cannot "
        "reduce; a candidate more than 5σ above the floor is flagged. Low-level (gradient-boosted trees): log10(cell / E_inc + "
        "10⁻¹⁰) of every cell, the log layer energies and E_tot over E_inc, hit cells per layer. High-level: the observables "
        "(energies as logarithms). CaloChallenge low-level: the CaloChallenge's MLP on cells / E_inc, the figure of published "
        "tables. All tests also see log10 E_inc and any further conditions (x0, y0, θ, cos φ, sin φ). JSD = (log 2 − BCE)/log 2 "
        "of the calibrated outputs; it can be slightly negative when the calibration part is small.</p>"
    )
    return out


def _has_trends(ev: Evaluation) -> bool:
    return bool(ev.metrics["reference"]["condition_trends"])


def _conditions_section(ev: Evaluation, dpi: int) -> str:
    mt = ev.metrics
    labels = [s.label for s in ev.samples]
    trends = [mt["reference"]["condition_trends"]] + [c["condition_trends"] for c in mt["candidates"]]
    fig = plotting.condition_figure([d.conditions for d in ev.summaries], ev.observables, trends, labels, ev.geometry, CONDITION_TRENDS)
    out = _figure(
        plotting.to_data_uri(fig, dpi),
        "Layer centroids against the impact point (x0, y0) and widths against the polar angle θ, per layer: the mean in ten bins "
        "of the condition (standard error of the mean) and the least-squares line over all showers (dashed), for every sample. "
        "A conditional generator must follow the reference's slopes.",
        "observables against conditions",
    )
    rows = []
    for name, ref in trends[0].items():
        row = [name, format_measurement(ref["slope"])]
        for t in trends[1:]:
            cand = t.get(name)
            row.append("–" if cand is None else format_measurement(cand["slope"]))
        rows.append(row)
    out += _table(["trend", *(f"slope: {lab}" for lab in labels)], rows)
    out += "<p class='note'>Slopes in mm per mm (centroids against x0, y0) and mm per rad (widths against θ), with their fit errors.</p>"
    return out


def _nearest_section(ev: Evaluation, dpi: int) -> str:
    labels = [s.label for s in ev.samples]
    fig = plotting.nn_distance_figure(ev.nearest, labels)
    out = _figure(
        plotting.to_data_uri(fig, dpi),
        "Distance of each candidate shower (cells / E_inc, Euclidean) to its nearest shower in one half of the reference, "
        "against the same distance for held-out showers of the other half (grey). A generator that memorised its training showers "
        "piles up at zero when the reference holds its training set; a distribution shifted to the right means showers unlike any reference shower.",
        "nearest-neighbour distances",
    )
    rows = [
        [
            c["label"],
            format_measurement(c["nearest_neighbours"]["ratio"]),
            format_measurement(c["nearest_neighbours"]["copies"], 100),
            str(c["nearest_neighbours"]["n_query"]),
        ]
        for c in ev.metrics["candidates"]
    ]
    out += _table(["candidate", "median distance ratio (≈ 1)", "below 1 % quantile of held-out [%] (≈ 1)", "showers queried"], rows)
    ref = ev.summaries[0].subsample
    for ci, (c, nn) in enumerate(zip(ev.summaries[1:], ev.nearest), start=1):
        order = np.argsort(nn["candidate_distances"])[:3]
        cand_rows = c.subsample.cells[nn["candidate_index"][order]]
        ref_rows = ref.cells[nn["pool_index"][order]]
        fig = plotting.nearest_pairs_figure(cand_rows, ref_rows, nn["candidate_distances"][order], ev.geometry, (labels[0], labels[ci]))
        out += f"<details><summary>{_e(labels[ci])}: the three showers closest to a reference shower, beside it</summary>"
        out += _figure(
            plotting.to_data_uri(fig, dpi),
            "Cell energies (log colour scale) of the candidate showers with the smallest nearest-neighbour distance, each above its "
            "nearest reference shower; identical pairs would mean copied showers.",
            "nearest pairs",
        )
        out += "</details>"
    return out


_DEFINITIONS = """
<dl>
<dt>Observables</dt><dd>Per shower, following the CaloGAN analysis code: layer energies E_i and E_tot [MeV]; fractions E_i/E_tot;
response E_tot/E_inc; shower depth s_d = Σ i·E_i/E_tot (layer index i from 0) and its width σ_sd = √(Σ i²E_i/E_tot − s_d²);
per layer the energy-weighted centroid and standard deviation (width) of the cell-centre coordinates along x and y [mm];
sparsity, the fraction of a layer's cells above threshold; E_ratio = (E_max1 − E_max2)/(E_max1 + E_max2) of the two hottest cells;
the hottest cell's energy; the number of hit cells. Centroid, width and E_ratio of an empty layer and the fractions and depth of
an empty shower are undefined and left out of histograms (their share is listed).</dd>
<dt>Separation power</dt><dd>S = ½ Σ_k (p_k − q_k)²/(p_k + q_k) of the normalised histograms on bins shared by both samples;
0 for identical histograms, 1 for disjoint ones. Uncertainty: bootstrap.</dd>
<dt>χ²/ndf</dt><dd>Two-sample χ² of the unnormalised histograms, χ² = Σ (√(M/N) n_k − √(N/M) m_k)²/(n_k + m_k), over the bins with
entries minus one; ≈ 1 ± √(2/ndf) for two samples of one distribution.</dd>
<dt>1-Wasserstein distance W1</dt><dd>∫|F_ref − F_cand| dx of the empirical distribution functions, in the observable's unit.</dd>
<dt>Classifier AUC</dt><dd>Area under the ROC curve of a network trained to tell the candidate from the reference: 0.5 when it
cannot, 1 when it always can. Its floor, the same test between two halves of the reference, is what a perfect candidate reaches.</dd>
<dt>FPD, KPD</dt><dd>Fréchet physics distance (Fréchet distance of Gaussian fits, extrapolated to infinite samples) and kernel
physics distance (unbiased MMD² with the kernel (x·y/d + 1)⁴) of the conditions and high-level observables, standardised with
the reference and clipped at ±5σ (Kansal et al., arXiv:2211.10295).</dd>
<dt>Resolution</dt><dd>Half the central 68 % interval of E_tot/E_inc divided by its mean in each incident-energy bin, fitted
with σ/E = a/√E ⊕ b = √(a²/E + b²), E in GeV.</dd>
</dl>
"""


def render_html(ev: Evaluation, *, dpi: int = 80) -> str:
    """The complete, self-contained report page of an evaluation."""
    mt = ev.metrics
    st = mt["settings"]
    labels = [s.label for s in ev.samples]
    title = f"Shower validation: {', '.join(labels[1:])} against {labels[0]}"
    g = mt["geometry"]
    meta = (
        f"calogan {_e(mt['calogan_version'])} · {_e(mt['created_utc'])} · geometry {_e(g['name'])} ({g['n_layers']} layers, "
        f"{g['n_cells']} cells) · cell threshold {st['threshold_mev']:g} MeV · seed {st['seed']} · "
        f"{len(mt['energy_bins_gev'])} incident-energy bins · classifiers {'on' if st['classifiers'] else 'off (--fast)'}"
    )
    sections = [
        ("samples", "Samples", _samples_section(ev)),
        ("summary", "Summary", _summary_section(ev)),
        ("images", "Mean shower images", _images_section(ev, dpi)),
        ("profiles", "Longitudinal and radial profiles", _profiles_section(ev, dpi)),
        ("resolution", "Energy response and resolution", _resolution_section(ev, dpi)),
        *([("conditions", "Observables against conditions", _conditions_section(ev, dpi))] if _has_trends(ev) else []),
        ("observables", "Shower observables, all energies", _observables_section(ev, dpi)),
        ("energy-bins", "Shower observables per incident-energy bin", _energy_bins_section(ev, dpi)),
        ("spectrum", "Cell-energy spectrum", _spectrum_section(ev, dpi)),
        ("classifiers", "Classifier tests", _classifier_section(ev)),
        ("nearest", "Nearest neighbours (memorisation check)", _nearest_section(ev, dpi)),
        ("definitions", "Definitions", _DEFINITIONS),
    ]
    toc = "".join(f'<li><a href="#{sid}">{_e(name)}</a></li>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{i}. {_e(name)}</h2>{content}</section>' for i, (sid, name, content) in enumerate(sections, start=1)
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in mt["timings_s"].items())
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{_e(title)}</h1><p class='meta'>{meta}</p></header>"
        f"<nav><ol>{toc}</ol></nav>{body}"
        f"<p class='meta'>Computed in: {_e(timing)}.</p></main></body></html>\n"
    )
