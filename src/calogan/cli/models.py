"""``calogan models [NAME]``: the generators that ship with calogan, their provenance and measured figures."""

from __future__ import annotations

import argparse
import json

__all__ = ["describe", "register", "run", "table"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the shipped pretrained generators", description=__doc__.split("``: ")[1])
    p.add_argument("name", nargs="?", help="show one model's whole card (training data, command, figures)")
    p.add_argument("--json", action="store_true", help="print the card(s) as JSON")
    p.set_defaults(func=run)


def _fmt(value, digits: int = 3) -> str:
    """A figure as text: a number, or (value, uncertainty) as 'v +- u'."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]:.{digits}f} +- {value[1]:.{digits}f}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "-" if value is None else str(value)


def table(cards: list[dict]) -> str:
    """One line per shipped model: what it simulates and how close to Geant4 it came."""
    head = f"{'name':20s} {'particle':8s} {'conv.':6s} {'conditions':24s} {'family':7s} {'MB':>5s}  {'AUC low (floor)':22s} {'worst response (sd)':>22s} {'a / a_G4':>8s}"
    lines = [head, "-" * len(head)]
    for c in cards:
        f = c.get("figures", {})
        auc = f"{_fmt(f.get('auc_low'))} ({_fmt(f.get('auc_low_floor', [None])[0] if f.get('auc_low_floor') else None)})"
        resp, pull = f.get("response_max_deviation"), f.get("response_max_deviation_sigma")
        resp_text = "-" if resp is None else f"{100 * resp:.2f} %" + (f" ({pull:.1f} sd)" if pull is not None else "")
        a, a_ref = f.get("stochastic_a"), f.get("stochastic_a_geant4")
        ratio = f"{a[0] / a_ref[0]:.2f}" if a and a_ref and a_ref[0] > 1e-6 else "-"  # a flat sigma/E fits a = 0
        lines.append(
            f"{c['name']:20s} {c.get('particle', '-'):8s} {c.get('convention', '-'):6s} {','.join(c.get('conditions', [])):24s} "
            f"{c.get('family', '-'):7s} {c['size_bytes'] / 1e6:5.1f}  {auc:22s} {resp_text:>22s} {ratio:>8s}"
        )
    return "\n".join(lines)


def describe(c: dict) -> str:
    """A card as readable text."""
    out = [f"{c['name']}: {c.get('family', '?')} generator of {c.get('particle', '?')} showers ({c.get('convention', '?')} convention)"]
    out.append(f"  geometry {c.get('geometry', '?')}, conditions {', '.join(c.get('conditions', []))}, {c['size_bytes'] / 1e6:.1f} MB")
    for key in ("training_data", "validation_data", "test_data"):
        for d in c.get(key, []):
            out.append(
                f"  {key.replace('_', ' ')}: {d.get('file')} ({d.get('showers', '?')} showers; {d.get('part', '')}) sha256 {d.get('sha256', '?')}"
            )
    if "command" in c:
        out.append(f"  trained by: {c['command']}")
    if "budget" in c:
        out.append("  budget: " + ", ".join(f"{k} {v}" for k, v in c["budget"].items()))
    cal = c.get("calibration")
    if cal:
        tried = ", ".join(f"{k} {v:.3f}" for k, v in cal.get("fast_auc", {}).items())
        out.append(
            f"  marginal calibration (calogan calibrate-model): noise {cal.get('noise', 0):g}; validation fast AUC by noise: {tried}"
        )
    f = c.get("figures", {})
    if f:
        out.append(f"  measured on held-out Geant4 showers ({f.get('date', '?')}): {f.get('command', '')}")
        for k, v in f.items():
            if k not in ("date", "command"):
                out.append(f"    {k}: {_fmt(v, 4)}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from calogan import pretrained

    cards = [pretrained.card(args.name)] if args.name else [pretrained.card(n) for n in pretrained.names()]
    if args.json:
        print(json.dumps(cards[0] if args.name else cards, indent=2))
    elif args.name:
        print(describe(cards[0]))
    elif not cards:
        print("no pretrained models ship with this calogan")
    else:
        print(table(cards))
        print("\n'calogan models NAME' shows a model's training data, command and figures; any command that takes a checkpoint takes NAME.")
    return 0
