#!/usr/bin/env bash
# The main job on the built-in default, end to end with what exists; `make demo` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=demo-output
mkdir -p "$OUT"
# Until the built-in simulator lands, the demo summarizes the shared Geant4 sample if present.
G4=../shared/data/geant4/g4_eplus_active.h5
if [ -f "$G4" ]; then
  "$BIN/calogan" info "$G4"
else
  "$BIN/calogan" --help
fi
