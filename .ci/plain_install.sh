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
# Each optional part, left out, says in one line (exit 2) which extra to install.
check_hint() {  # expected line prefix, then the overrides
  local expected=$1
  shift
  set +e
  output=$(python -m hpsearch experiment=ci "$@" 2>&1)
  code=$?
  set -e
  if [ "$code" != 2 ] || [ "$(printf '%s\n' "$output" | grep -c .)" != 1 ] || [[ "$output" != "$expected"* ]]; then
    printf 'plain install: %s should exit 2 with one install hint, got %s:\n%s\n' "$*" "$code" "$output" >&2
    exit 1
  fi
}
for backend in ray wandb sigopt; do
  check_hint "hpsearch: error: backend=$backend needs the package" backend=$backend
done
check_hint "hpsearch: error: peft=lora needs the package 'peft', which is not installed; fix: pip install 'hpsearch[peft]'" peft=lora
check_hint "hpsearch: error: trainer._target_: cannot import 'trl.SFTTrainer'" trainer._target_=trl.SFTTrainer
echo "plain install: ray, wandb, sigopt, peft and trl each name their extra in one line"
