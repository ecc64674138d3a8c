#!/usr/bin/env bash
# Every GPU check in one call (docs/scale-out.md "GPU check"): the CUDA tests, then the GPU figures, each
# step under its own time limit; the limits add up to 8 minutes. Prints one table; exits
# non-zero when a step fails (a failing CUDA test fails its step).
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU, after ./setup.sh
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: the steps and commands it would run
#
# Logs go to $GPU_CHECK_LOGS (default: a new temp folder), one file per step.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

# name | time limit (s) | command | the output line that holds the step's figure (grep -E)
STEPS=(
  "cuda_tests|90|$PY -m pytest -n 0 -q -p no:cacheprovider -rs tests/unit/test_cuda.py|passed|failed"
  "train_step|60|$PY benchmarks/train_throughput.py --device cuda --steps 5|official-style step$"
  "train_step_amp_off|50|$PY benchmarks/train_throughput.py --device cuda --steps 5 --set train.amp=false|official-style step$"
  "train_step_compile|90|$PY benchmarks/train_throughput.py --device cuda --steps 5 --set runtime.compile=true|official-style step$"
  "regeneration|70|$PY benchmarks/regeneration.py --device cuda --images 200 --photos 40|of the limit"
  "tune_2_workers|60|$PY benchmarks/tune_smoke.py --device cuda --workers 2 --trials 4|trials complete"
  "voc_round|60|$PY benchmarks/voc_round.py --device cuda --images 64|VOC round projected"
)

if [[ "${1:-}" == "--dry-run" ]]; then
  echo "gpu_check: ${#STEPS[@]} steps (dry run: nothing is started)"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd _ <<<"$s"
    printf '%-20s %4ss  %s\n' "$name" "$limit" "$cmd"
  done
  exit 0
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible to torch (torch.cuda.is_available() is false);" \
       "--dry-run lists the steps without one" >&2
  exit 2
fi

LOGS=${GPU_CHECK_LOGS:-$(mktemp -d /tmp/isim-gpu-check.XXXX)}
mkdir -p "$LOGS"
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); \
print(f'gpu_check on {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')"
failed=0
rows=()
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd pattern <<<"$s"
  echo "== $name (limit ${limit}s): $cmd"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$LOGS/$name.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  figure=$(grep -E "$pattern" "$LOGS/$name.log" | tail -n 1 | cut -c1-150)
  if [[ $rc -eq 0 ]]; then status=ok; elif [[ $rc -eq 124 || $rc -eq 137 ]]; then status=timeout; else status="failed($rc)"; fi
  [[ $rc -eq 0 ]] || { failed=1; tail -n 20 "$LOGS/$name.log"; }
  rows+=("$(printf '| %-20s | %-10s | %5s | %s |' "$name" "$status" "$secs" "$figure")")
done

echo
printf '| %-20s | %-10s | %5s | %s |\n' step status s figure
printf '| %-20s | %-10s | %5s | %s |\n' --- --- --- ---
printf '%s\n' "${rows[@]}"
echo "logs: $LOGS"
exit $failed
