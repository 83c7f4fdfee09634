#!/usr/bin/env bash
# The main job on the built-in default, end to end: simulate -> train -> generate -> evaluate.
# `make demo` runs it; it needs nothing downloaded (the parametrized simulator is the reference).
# Outputs go to demo-output/; rerunning replaces them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=demo-output
mkdir -p "$OUT"

echo "== 1/5 simulate: 6000 training and 2000 held-out 1-100 GeV e+ showers (CaloGAN geometry)"
"$BIN/calogan" simulate --particle e+ --energy 1:100 -n 6000 --seed 0 -o "$OUT/eplus_train.h5" --force --quiet
"$BIN/calogan" simulate --particle e+ --energy 1:100 -n 2000 --seed 1 -o "$OUT/eplus_test.h5" --force --quiet
"$BIN/calogan" info "$OUT/eplus_train.h5"

echo "== 2/5 train: the ATLAS-style conditional WGAN-GP, demo config (2000 steps, one to three minutes on CPU)"
# One thread: this small model gains nothing from two, and two threads spin against any other busy process.
"$BIN/calogan" train --config configs/wgan_demo.yaml --data "$OUT/eplus_train.h5" -o "$OUT/wgan" --threads 1 --set max_minutes=3 --force --quiet

echo "== 3/5 generate: the held-out showers' incident energies, from the best checkpoint"
"$BIN/calogan" generate --model "$OUT/wgan/best.pt" --energy-from "$OUT/eplus_test.h5" --seed 2 --no-progress -o "$OUT/wgan_gen.h5" --force

echo "== 4/5 a second parametrized sample, the reference-level comparison"
"$BIN/calogan" simulate --particle e+ --energy 1:100 -n 2000 --seed 3 -o "$OUT/param_gen.h5" --force --quiet

echo "== 5/5 evaluate: observables, classifier AUCs with their floor, response and resolution"
"$BIN/calogan" evaluate "$OUT/eplus_test.h5" "$OUT/wgan_gen.h5" "$OUT/param_gen.h5" \
  --labels Simulator,WGAN-demo,Simulator-seed3 -o "$OUT/report" --force

echo "Report: $OUT/report/report.html (metrics in $OUT/report/metrics.json)."
echo "The demo GAN is a smoke test of the pipeline, not a physics-quality model:"
echo "see configs/wgan_eplus.yaml and the README for the full-quality runs."
