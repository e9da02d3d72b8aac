#!/usr/bin/env bash
# One GPU check (issue 21, item 7) on a fresh machine with one NVIDIA GPU: at most 8 minutes.
#   bash experiments/gpu_check.sh [OUT_DIR]      # writes gpu_check.json, .txt and .log there
# Data: $W2V_DATA_DIR, else ../shared/data, else .gpu_data/ in the repository (text8-head.txt.gz,
# questions-words.txt, wordsim353.tsv). Offline, wheels in .whl/ are installed instead of PyPI's.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
if [ -z "${W2V_DATA_DIR:-}" ]; then
  for d in ../shared/data .gpu_data; do
    [ -f "$d/text8-head.txt.gz" ] && export W2V_DATA_DIR="$(cd "$d" && pwd)" && break
  done
fi
wheels=()
[ -d .whl ] && wheels=(--wheel_dir=.whl)
export PYTHONUNBUFFERED=1
timeout 490 "${PYTHON:-python3}" experiments/gpu_check.py --out="$out/gpu_check.json" \
  "${wheels[@]}" 2>&1 | tee "$out/gpu_check.log"
