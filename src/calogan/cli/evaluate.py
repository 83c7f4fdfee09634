"""``calogan evaluate REF.h5 CAND.h5 [CAND2.h5 ...]``: compare candidate showers with a reference; writes metrics.json and report.html."""

from __future__ import annotations

import argparse
import sys
import time

from calogan.errors import ConfigError

__all__ = ["parse_energy_bins", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare candidate shower files with a reference: metrics.json and an HTML validation report",
        description=(
            "Compare one or more candidate shower files with a reference file: shower observables (separation power, chi2/ndf, "
            "1-Wasserstein, overall and per incident-energy bin), classifier AUCs with their reference-vs-reference floor, "
            "FPD/KPD, response and resolution, mean images, nearest neighbours. Writes OUTPUT/metrics.json and a self-contained "
            "OUTPUT/report.html. An OUTPUT directory that already holds them is refused without --force; other files in it are "
            "left alone; a new OUTPUT directory appears only when complete."
        ),
    )
    p.add_argument("reference", help="reference shower file (e.g. Geant4), CaloGAN or CaloChallenge HDF5")
    p.add_argument(
        "candidates",
        nargs="*",
        metavar="candidate",
        help="candidate shower files (GAN, parametrized simulation, ...); none with --sensitivity",
    )
    p.add_argument("--labels", help="comma-separated labels, the reference's first (default: the file names)")
    p.add_argument("-o", "--output", required=True, help="output directory for metrics.json and report.html")
    p.add_argument("--fast", action="store_true", help="skip both classifier tests (seconds instead of minutes)")
    p.add_argument("--geometry", help="preset name, CaloChallenge binning .xml or geometry .json (default: each file's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice: subsets, splits, bootstraps, classifiers (default 0)")
    p.add_argument("--max-showers", type=int, default=None, metavar="N", help="use a random subset of at most N showers of each file")
    p.add_argument(
        "--energy-bins",
        default="auto",
        help="incident-energy bins of the per-bin metrics: 'auto' (one per energy point of a discrete sample, else 5 of equal "
        "population), a number of equal-population bins, or comma-separated edges in GeV (default auto)",
    )
    p.add_argument(
        "--threshold", type=float, default=0.0, help="cell energy threshold in MeV: cells at or below it count as empty (default 0)"
    )
    p.add_argument("--allow-condition-mismatch", action="store_true", help="compare even when particles or condition distributions differ")
    p.add_argument("--strict", action="store_true", help="refuse negative cells instead of clipping them")
    p.add_argument("--force", action="store_true", help="overwrite metrics.json and report.html in an existing output directory")
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="known-distortion test of the metrics themselves: distorted copies of part of REFERENCE (energy scale, sampling, width, "
        "depth, thresholds, dropped hits, a mirrored layer for off-axis showers, an undistorted self-copy) evaluated against the rest; "
        "writes OUTPUT/sensitivity.md and .json beside metrics.json and report.html",
    )
    p.add_argument(
        "--sensitivity-n",
        type=int,
        default=1000,
        metavar="N",
        help="showers per sample in --sensitivity (needs 3N in REFERENCE; default 1000)",
    )
    p.add_argument(
        "--classifier-runs",
        type=int,
        default=None,
        metavar="K",
        help="independent runs averaged into each classifier AUC (default 5: every shower reported on once)",
    )
    p.add_argument(
        "--subsample",
        type=int,
        default=40000,
        metavar="N",
        help="random showers per file kept whole for classifiers, FPD/KPD and nearest neighbours; observables, histograms, "
        "response and mean images use every shower, streamed (default 40000)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)


def parse_energy_bins(text: str):
    """'auto', an integer number of bins, or comma-separated increasing edges in GeV."""
    text = text.strip()
    if text == "auto":
        return "auto"
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--energy-bins must be 'auto', a number of bins or comma-separated edges in GeV, got {text!r}") from None
    if len(values) == 1:
        if values[0] != int(values[0]) or values[0] < 1:
            raise ConfigError(f"--energy-bins: a number of bins must be a positive integer, got {text!r}")
        return int(values[0])
    if any(b <= a for a, b in zip(values, values[1:])) or values[0] < 0:
        raise ConfigError(f"--energy-bins: edges must be non-negative and increasing, got {text!r}")
    return tuple(values)


def _summary_lines(metrics: dict) -> list[str]:
    from calogan.report import format_measurement as fm

    floor = metrics["floor"]
    lines = []
    for c in metrics["candidates"]:
        s = c["summary"]
        lines.append(f"{c['label']}:")
        for level, name in (("low", "low-level"), ("high", "high-level"), ("low_calochallenge", "CaloChallenge")):
            r = s[f"classifier_{level}"]
            if r is None:
                lines.append(f"  AUC {name:<15} skipped (--fast)")
            else:
                excess = r["excess_sigma"]
                lines.append(
                    f"  AUC {name:<15} {fm(r['auc'])}   floor {fm(r['floor'])}   ({'–' if excess is None else f'{excess:+.1f}'} sigma)"
                )
        lines.append(f"  FPD                 {fm(s['fpd'])}   floor {fm(floor['fpd'])}")
        lines.append(f"  KPD                 {fm(s['kpd'])}   floor {fm(floor['kpd'])}")
        lines.append(f"  E_tot chi2/ndf      {fm(s['energy_chi2'])}")
        lines.append(f"  mean separation     {fm(s['separation_power_mean'])}   (worst: {', '.join(s['worst_observables'][:3])})")
        lines.append(f"  mean chi2/ndf       {fm(s['chi2_ndf_mean'])}")
        lines.append(f"  NN distance ratio   {fm(s['nn_ratio'])}")
    return lines


def _config(args: argparse.Namespace):
    from dataclasses import replace

    from calogan.evaluation import CLASSIFIER_LEVELS, EvaluationConfig
    from calogan.metrics import default_classifier

    classifier = None
    if args.classifier_runs is not None:
        if args.classifier_runs < 1:
            raise ConfigError(f"--classifier-runs must be >= 1, got {args.classifier_runs}")
        classifier = {level: replace(default_classifier(level), n_runs=args.classifier_runs) for level in CLASSIFIER_LEVELS}
    if args.subsample < 20:
        raise ConfigError(f"--subsample must be >= 20 showers, got {args.subsample}")
    return EvaluationConfig(
        seed=args.seed,
        threshold=args.threshold,
        energy_bins=parse_energy_bins(args.energy_bins),
        classifiers=not args.fast,
        classifier=classifier,
        allow_condition_mismatch=args.allow_condition_mismatch,
        subsample=args.subsample,
    )


def _run_sensitivity(args: argparse.Namespace, config, out, say) -> int:
    import json

    from calogan.evaluation import to_json_value
    from calogan.io import read_showers
    from calogan.report import write_report
    from calogan.sensitivity import format_table, sensitivity

    if args.candidates:
        raise ConfigError("--sensitivity takes the reference file only (it makes its own candidates)")
    if args.labels is not None:
        raise ConfigError("--sensitivity names its candidates after the distortions; drop --labels")
    say(f"reading {args.reference}")
    reference = read_showers(args.reference, geometry=args.geometry, strict=args.strict)
    result = sensitivity(reference, n=args.sensitivity_n, config=config, seed=args.seed, progress=say)
    table = format_table(result.rows, result.n_per_class)
    say("writing the report")
    doc = {"reference": str(args.reference), "n_per_class": result.n_per_class, "rows": to_json_value(result.rows)}
    extra = {"sensitivity.md": table, "sensitivity.json": json.dumps(doc, indent=1, allow_nan=False) + "\n"}
    write_report(result.evaluation, out, force=args.force, extra=extra)
    print(table, end="")
    print(f"wrote {out / 'sensitivity.md'}, sensitivity.json, metrics.json and report.html")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from calogan.cli import flag_names
    from calogan.evaluation import Sample, evaluate
    from calogan.report import check_output, write_report

    if args.max_showers is not None and args.max_showers < 20:
        raise ConfigError(f"--max-showers must be >= 20, got {args.max_showers}")
    if args.threshold < 0:
        raise ConfigError(f"--threshold must be >= 0 MeV, got {args.threshold}")
    config = _config(args)

    def say(text: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - t0:6.1f} s] {text}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if args.sensitivity:
        out = check_output(args.output, args.force)
        return _run_sensitivity(args, config, out, say)
    if not args.candidates:
        raise ConfigError("give at least one candidate file after the reference (or --sensitivity)")
    files = [args.reference, *args.candidates]
    if args.labels is None:
        labels = [Path(f).stem for f in files]
    else:
        labels = [label.strip() for label in args.labels.split(",")]
        if len(labels) != len(files) or not all(labels):
            raise ConfigError(
                f"--labels needs {len(files)} non-empty comma-separated labels (reference first), got {len(labels)}: {args.labels!r}"
            )
    if len(set(labels)) != len(labels):
        raise ConfigError(f"labels must differ from each other, got {labels}")
    out = check_output(args.output, args.force)  # refuse now, not after minutes of work
    samples = [
        Sample.file(label, path, geometry=args.geometry, strict=args.strict, max_showers=args.max_showers, seed=args.seed + i)
        for i, (path, label) in enumerate(zip(files, labels))
    ]
    with flag_names(energy_bins="--energy-bins"):
        evaluation = evaluate(samples[0], samples[1:], config, progress=say)
    say("writing the report")
    paths = write_report(evaluation, out, force=args.force)
    for line in _summary_lines(evaluation.metrics):
        print(line)
    for w in evaluation.metrics["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {paths['metrics.json']} and {paths['report.html']} in {time.perf_counter() - t0:.1f} s")
    return 0
