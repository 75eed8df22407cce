#!/usr/bin/env bash
# README command 1's install, `pip install .` with no extras, in a venv of its own: a smoke search in one process
# and with workers=2 must train every trial, and each backend whose extra is missing must say, in one line, what
# to install. The test venv has every extra, so only this catches what breaks without them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
python3 -m venv "$root/venv"
. "$root/venv/bin/activate"
pip install -q torch==2.13.0 && pip install -q .
cd "$root"
python -m hpsearch experiment=smoke progress=false hydra.run.dir=one study_name=one
python -m hpsearch experiment=smoke progress=false hydra.run.dir=two study_name=two workers=2
python - <<'PY'
import csv
for run in ("one", "two"):
    states = [row["state"] for row in csv.DictReader(open(f"{run}/trials.csv"))]
    assert states == ["COMPLETE"] * 3, (run, states)
print("plain install: one process and workers=2 trained every trial")
PY
for backend in ray wandb sigopt; do
  set +e
  output=$(python -m hpsearch experiment=smoke backend=$backend 2>&1)
  code=$?
  set -e
  expected="hpsearch: error: backend=$backend needs the package"
  if [ "$code" != 2 ] || [ "$(printf '%s\n' "$output" | grep -c .)" != 1 ] || [[ "$output" != "$expected"* ]]; then
    printf 'plain install: backend=%s should exit 2 with one install hint, got %s:\n%s\n' "$backend" "$code" "$output" >&2
    exit 1
  fi
done
echo "plain install: ray, wandb and sigopt each name their extra in one line"
