#!/usr/bin/env bash
# One GPU session's checks, in one command: the training-throughput bench at the gpu preset's sizes,
# then report 1 executed with preset gpu. Everything it measures lands in $OUT (default out/gpu).
#
#   bash bench/gpu_run.sh                          # on a CUDA machine with the repo's .venv (or any
#                                                  # python3 with torch + requirements) active
#   BENCH=0 NB_ARGS="-p d_model 1024" bash bench/gpu_run.sh   # report 1 only, with overrides
#
# Where the machine's python3 lacks packages (papermill, transformer-lens, ...), put their wheels
# in .whl/ (git-ignored); they are installed into /tmp/site first.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset MPLBACKEND
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformer_lens, papermill, lib.model; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  2>&1 | tee -a "$OUT/gpu.txt"

# 1. Throughput of our model vs the same weights in a HookedTransformer, and MFU against a measured bf16 peak.
[ "${BENCH:-1}" = 1 ] && timeout "${BENCH_TIMEOUT:-150}" python3 bench/train_throughput.py --preset gpu --reps 5 --steps-per-rep 10 \
  --quality-steps 0 2>&1 | tee "$OUT/bench_gpu.txt"

# 2. Report 1 with preset gpu (the report's model sizes; NB_ARGS: papermill -p overrides).
start=$(date +%s)
timeout "${NB_TIMEOUT:-420}" python3 scripts/execute_notebook.py notebooks/01_build_transformer.ipynb \
  "$OUT/01_build_transformer_gpu.ipynb" -p preset gpu ${NB_ARGS-} --cwd notebooks 2>&1 \
  | tr '\r' '\n' | grep -v "^Executing: .*cell/s\]$" | tee "$OUT/nb01.log"
echo "report 1 (gpu preset): exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s wall" | tee -a "$OUT/nb01.log"
# training histories of every model trained here (small JSON/CSV), whatever happened above
find "${ARTIFACTS_DIR:-artifacts}" \( -name "*.json" -o -name "*.csv" \) -print0 2>/dev/null \
  | tar czf "$OUT/artifact_histories.tgz" --null -T - 2>/dev/null
ls -la "$OUT"
