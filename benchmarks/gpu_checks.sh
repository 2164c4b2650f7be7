#!/bin/bash
# The GPU checks of issue 4 in one command, for a machine with a CUDA device:
#   tests/test_gpu.py (the GPU paths give the CPU's answers), then
#   bench_side_by_side.py --device cuda on the default scan (seed 11) and a second
#   scan (seed 41, the same model: generalisation), each recorded, then
#   bench_side_by_side.py --device cuda --scan on each scan file of SCANS with its own
#   model (hidden scans), recorded, then bench_throughput.py --device cuda, recorded.
#   With STAGES_SCAN (the MODEL's own scan file), bench_inference_stages.py times the
#   inference's stages on it and on SCANS by batch size first, recorded.
# Usage (from the repository root, a model trained by train_models.py --only seed11):
#   MODEL=models/seed11 PTYCHI_PYTHON=python3 bash benchmarks/gpu_checks.sh
# Environment: MODEL (default models/seed11), SEEDS (default "11 41 11"; empty: none),
#   SCANS (space-separated SCAN.npz=MODEL pairs, default none), STAGES_SCAN,
#   OUT (logs; default benchmarks/_work/gpu), BUDGET (seconds; steps that would not
#   fit are skipped, default 530), WHEELS (a folder of wheels to install first into
#   /tmp/site, for a machine without a registry: pydantic, ptychi ...).
set -u
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT=${OUT:-benchmarks/_work/gpu}; MODEL=${MODEL:-models/seed11}; mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl > "$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
[ -e "$MODEL" ] || { echo "gpu_checks: no model at $MODEL (benchmarks/train_models.py --only seed11)"; exit 2; }
T0=$(date +%s); BUDGET=${BUDGET:-530}
el() { echo $(( $(date +%s) - T0 )); }
fits() { [ $(( $(el) + $1 )) -le "$BUDGET" ]; }
{ nvidia-smi -L; python3 -c "import torch, ptychopinn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$OUT/env.log"
echo "== tests/test_gpu.py at $(el) s"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" | tail -6
i=0
for seed in ${SEEDS-11 41 11}; do
  i=$((i+1)); fits 150 || { echo "skipped side by side $i (seed $seed) at $(el) s"; continue; }
  echo "== side by side $i, seed $seed, at $(el) s"
  timeout 150 python3 benchmarks/bench_side_by_side.py --model "$MODEL" \
    --model-label "$MODEL" --seed "$seed" \
    --cases textured --device cuda --threads 16 --record > "$OUT/side_$i.log" 2>&1
  grep -E "pty-chi LSQML|PINN inference|inference stages|Issue 4|Error" "$OUT/side_$i.log" | tail -6
  cp docs/benchmarks.md "$OUT/benchmarks.md"
done
if [ -n "${STAGES_SCAN:-}" ] && fits 60; then
  echo "== inference stages at $(el) s"
  runs="--run $MODEL $STAGES_SCAN"
  for pair in ${SCANS:-}; do runs="$runs --run ${pair#*=} ${pair%%=*}"; done
  timeout 60 python3 benchmarks/bench_inference_stages.py $runs --device cuda \
    --batch-sizes 64 256 1024 --threads 16 --record > "$OUT/stages.log" 2>&1
  grep -E "^\|" "$OUT/stages.log" | tail -8
  cp docs/benchmarks.md "$OUT/benchmarks.md"
fi
for pair in ${SCANS:-}; do
  i=$((i+1)); scan=${pair%%=*}; model=${pair#*=}
  fits 120 || { echo "skipped side by side $i ($scan) at $(el) s"; continue; }
  echo "== side by side $i, $scan with $model, at $(el) s"
  timeout 120 python3 benchmarks/bench_side_by_side.py --model "$model" --model-label "$model" \
    --scan "$scan" --device cuda --threads 16 --record > "$OUT/side_$i.log" 2>&1
  grep -E "pty-chi LSQML|PINN inference|inference stages|Issue 4|Error" "$OUT/side_$i.log" | tail -6
  cp docs/benchmarks.md "$OUT/benchmarks.md"
done
if fits 100; then
  echo "== throughput at $(el) s"
  timeout 100 python3 benchmarks/bench_throughput.py --device cuda --train-batch 64 --threads 16 \
    --seconds 3 --record > "$OUT/throughput.log" 2>&1; tail -8 "$OUT/throughput.log"
  cp docs/benchmarks.md "$OUT/benchmarks.md"
fi
echo "== done at $(el) s"
