#!/usr/bin/env bash
# GPU machine check, one call: build the CUDA extension, run the cuda-marked tests and every benchmark,
# print the tables last. Logs and CSVs go under $OUT (default ./out). Budget: under 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export WARPED_FAST_BENCH_OUT="$OUT/results" HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

source bench/gpu_wheels.sh

echo "== build" && t0=$(date +%s)
WARPED_FAST_CUDA=ON CMAKE_ARGS="-DWARPED_FAST_CUDA_ARCHS=90" \
  python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "built in $(( $(date +%s) - t0 )) s"
python3 -c "import warped_fast, json; print(json.dumps(warped_fast.backend_info(), indent=1))" | tee "$OUT/backends.json"

echo "== cuda tests"
timeout 180 python3 -m pytest -m cuda -q -p no:cacheprovider tests/ops tests/noise 2>&1 | tee "$OUT/tests_cuda.log" | tail -15

echo "== benchmarks"
for b in bench_gp_noise bench_warp bench_guidance bench_noise_warp bench_sampler; do
  timeout 120 python3 "bench/$b.py" --device cuda >"$OUT/$b.log" 2>&1 || echo "$b failed (see $OUT/$b.log)"
done
cat "$OUT"/bench_*.log
