"""Retrain one of calogan's shipped generators from the shared Geant4 files, end to end.

    python scripts/pretrain.py NAME [--data DIR] [--work DIR] [--threads N] [--ship]

Stages, each skipped when its output exists (rerun the same command to resume a killed run):
1. split each Geant4 file 70/10/20 % into train/val/test with seed 0 (``calogan split``);
2. train with ``configs/pretrained/NAME.yaml`` on the training part(s), choosing the
   checkpoint on the validation part (``calogan train``, resumable);
3. generate at the exact conditions of the test part and compare with ``calogan evaluate``
   (the test part is never seen in training or model selection);
4. with ``--ship``: write the generator-only checkpoint and its card into
   ``src/calogan/pretrained`` (``calogan models NAME`` then lists it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (particle, convention, conditions, training files, the file whose val/test parts are used)
MODELS = {
    "eplus-active": ("e+", "active", ["e_inc"], ["g4_eplus_active.h5", "g4_eplus_extra_active.h5"], "g4_eplus_active.h5"),
    "eplus-total": ("e+", "total", ["e_inc"], ["g4_eplus_total.h5"], "g4_eplus_total.h5"),
    "gamma-active": ("gamma", "active", ["e_inc"], ["g4_gamma_active.h5"], "g4_gamma_active.h5"),
    "gamma-total": ("gamma", "total", ["e_inc"], ["g4_gamma_total.h5"], "g4_gamma_total.h5"),
    "piplus-active": ("pi+", "active", ["e_inc"], ["g4_piplus_active.h5"], "g4_piplus_active.h5"),
    "eplus-varpos-total": ("e+", "total", ["e_inc", "x0", "y0", "theta", "phi"], ["g4_eplus_varpos_total.h5"], "g4_eplus_varpos_total.h5"),
}
FRACTIONS = "0.7,0.1,0.2"


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def parts(work: Path, file: str) -> list[Path]:
    stem = Path(file).stem
    return [work / "data" / f"{stem}_{p}.h5" for p in ("train", "val", "test")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "geant4", help="folder of the Geant4 files")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "pretrain", help="folder for splits and runs")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--ship", action="store_true", help="copy the trained generator and its card into the package")
    a = ap.parse_args()
    particle, convention, conditions, train_files, eval_file = MODELS[a.name]
    calogan = [sys.executable, "-m", "calogan"]
    (a.work / "data").mkdir(parents=True, exist_ok=True)
    for f in dict.fromkeys([*train_files, eval_file]):
        if not all(p.exists() for p in parts(a.work, f)):
            run(*calogan, "split", str(a.data / f), "--fractions", FRACTIONS, "--seed", "0", "-o", *map(str, parts(a.work, f)), "--force")
    config = ROOT / "configs" / "pretrained" / f"{a.name}.yaml"
    out = a.work / a.name
    train_parts = [str(parts(a.work, f)[0]) for f in train_files]
    _, val, test = parts(a.work, eval_file)
    trained = out / "trained"  # written once the training has ended by itself (steps or minutes)
    if not trained.exists():
        resume = ["--resume"] if (out / "last.pt").exists() else []
        run(
            *calogan,
            "train",
            "--config",
            str(config),
            "--data",
            *train_parts,
            "--val-data",
            str(val),
            "-o",
            str(out),
            "--threads",
            a.threads,
            "--quiet",
            *resume,
        )
        trained.write_text("")
    gen = out / "test_generated.h5"
    if not gen.exists():
        run(
            *calogan,
            "generate",
            "--model",
            str(out / "best.pt"),
            "--energy-from",
            str(test),
            "--seed",
            "1",
            "--threads",
            a.threads,
            "--no-progress",
            "-o",
            str(gen),
        )
    report = out / "evaluate"
    if not (report / "metrics.json").exists():
        run(*calogan, "evaluate", str(test), str(gen), "--labels", f"Geant4,{a.name}", "-o", str(report), "--quiet")
    if a.ship:
        ship(a, out, report, train_files, particle, convention, conditions)


def ship(a, out: Path, report: Path, train_files, particle, convention, conditions) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from calogan.checkpoint import load_checkpoint, strip_checkpoint
    from calogan.pretrained import FOLDER, sha256

    target = FOLDER / f"{a.name}.pt"
    strip_checkpoint(out / "best.pt", target, force=True)
    ckpt = load_checkpoint(target)
    metrics = json.loads((report / "metrics.json").read_text())
    card = {
        "geometry": ckpt.geometry.name,
        "particle": particle,
        "convention": convention,
        "conditions": conditions,
        "family": ckpt.family,
        "step": ckpt.step,
        "training_data": [
            {"file": f, "sha256": sha256(a.data / f), "part": f"train ({FRACTIONS.split(',')[0]} of split --seed 0)"} for f in train_files
        ],
        "command": f"python scripts/pretrain.py {a.name} --ship",
        "config": f"configs/pretrained/{a.name}.yaml",
        "budget": f"{ckpt.train_config.get('max_minutes')} minutes on 1 CPU thread",
        "held_out": summary(metrics),
    }
    (FOLDER / f"{a.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB)")


def summary(metrics: dict) -> dict:
    """The headline figures of a two-file metrics.json (schema 2) for the card."""
    cand = metrics["candidates"][0] if "candidates" in metrics else metrics
    keep = {}
    for key in ("classifier", "response", "resolution", "observables_summary", "n_showers"):
        if key in cand:
            keep[key] = cand[key]
    return keep


if __name__ == "__main__":
    main()
