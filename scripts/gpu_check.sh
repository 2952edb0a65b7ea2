#!/usr/bin/env bash
# The GPU check: the full profile's code path on an NVIDIA GPU, without internet. Planned for 10 minutes on one
# H100; on one shared H200 moe-adapters-ddas and mage took over 5 min each (docs/measurements/gpu_check/), so
# METHOD_LIMIT (seconds, default 600) bounds each method and a rerun skips the methods already done.
#
#   bash scripts/gpu_check.sh [VIT_B16_WEIGHTS] [OUT_DIR]
#
# 1. every method, one call each, for a few iterations per step through `python -m uniil_lib benchmark` on
#    uniil-offline, with a profile file based on the full profile (GPU, ViT-B/16 loaded from a local file,
#    adapters in every block, precision by the hardware, loader workers) and small data: benchmarks/gpu_check.py
#    prepare writes it;
# 2. the training-iteration time of every method, measured inside learn(): OUT_DIR/step_times.json;
# 3. every notebook with that profile (UNIIL_PROFILE=<the profile file>): the full-profile path, small data.
# VIT_B16_WEIGHTS: an open_clip ViT-B-16 checkpoint file (default: $UNIIL_VIT_B16; none: random weights are made,
# which is enough for timing and for the code path, not for accuracy). OUT_DIR: default docs/measurements/gpu_check.
# Needs the offline data in $UNIIL_DATA (bash scripts/setup.sh) and the package's venv (.venv, else $PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
WEIGHTS="${1:-${UNIIL_VIT_B16:-}}"
OUT="${2:-docs/measurements/gpu_check}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
START=$(date +%s)

echo "== GPU and profile"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0), torch.version.cuda)" \
  || { echo "error: the GPU check needs an NVIDIA GPU with CUDA; run it on a GPU machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv | tee "$OUT/gpu.txt" || true
PROFILE=$("$PY" benchmarks/gpu_check.py prepare --out "$OUT" ${WEIGHTS:+--weights "$WEIGHTS"})
echo "profile file: $PROFILE"

echo "== every method through benchmark (uniil-offline), one call a method"
# A rerun skips the methods that already have a result (delete $OUT/methods to start over).
METHODS=$("$PY" benchmarks/gpu_check.py methods)
mkdir -p "$OUT/methods"
for METHOD in ${METHODS//,/ }; do
  [ -f "$OUT/methods/$METHOD.json" ] && { echo "$METHOD: done before, skipped"; continue; }
  BEGAN=$(date +%s)
  timeout "${METHOD_LIMIT:-600}" "$PY" -m uniil_lib benchmark --scenario uniil-offline --methods "$METHOD" \
    --profile "$PROFILE" --out "$OUT/methods/$METHOD.json" > "$OUT/methods/$METHOD.log" 2>&1 \
    && echo "$METHOD: $(( $(date +%s) - BEGAN )) s" \
    || echo "$METHOD: stopped or failed after $(( $(date +%s) - BEGAN )) s (see $OUT/methods/$METHOD.log)"
done
"$PY" benchmarks/gpu_check.py merge --out "$OUT" --methods "$METHODS"
"$PY" benchmarks/gpu_check.py summarise --out "$OUT" | tee "$OUT/step_times.txt"

echo "== every notebook, full-profile path, small data"
UNIIL_PROFILE="$PROFILE" "$PY" -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
  -p no:cacheprovider -q 2>&1 | tee "$OUT/notebooks.log"

echo "== done in $(( $(date +%s) - START )) s; outputs in $OUT" | tee "$OUT/total.txt"
