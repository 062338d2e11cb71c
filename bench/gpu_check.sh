#!/usr/bin/env bash
# GPU machine check, one call: build the CUDA extension, run the cuda-marked tests and the kernel and
# noise-warp benchmarks, print the tables last. Everything goes to $OUT/check.log and the benchmark CSVs
# to $OUT/results (few files: the device tool brings back at most 8). Budget: under 6 minutes.
# GPU_CHECK_SAMPLER=1 adds the sampler benchmark (SDXL-shaped UNet, compiled: several minutes more).
# GPU_CHECK_TESTS (test paths) and GPU_CHECK_BENCHES (names without bench_) narrow a rerun;
# GPU_CHECK_TUNE=0 skips the gp_noise launch sweep (bench/tune_gp_noise.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export WARPED_FAST_BENCH_OUT="$OUT/results" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
LOG="$OUT/check.log"
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - T0 )) s)"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
nvcc --version | tail -2
source bench/gpu_wheels.sh

stamp build
WARPED_FAST_CUDA=ON CMAKE_ARGS="-DWARPED_FAST_CUDA_ARCHS=90" \
  python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 \
  || { tail -60 "$OUT/build.log"; exit 1; }
rm -f "$OUT/build.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "import warped_fast, json; print(json.dumps(warped_fast.backend_info()))"

stamp "cuda tests"
# one line per failure (the assertion message names the errors and the tolerance)
timeout 180 python3 -m pytest -m cuda -q -p no:cacheprovider --tb=line ${GPU_CHECK_TESTS:-tests/ops tests/noise} 2>&1 | tail -40

declare -A limit=([gp_noise]=100 [warp]=60 [guidance]=60 [noise_warp]=180 [sampler]=400)
benches=${GPU_CHECK_BENCHES:-gp_noise warp guidance noise_warp}
[ "${GPU_CHECK_SAMPLER:-0}" = 1 ] && benches="$benches sampler"
for b in $benches; do
  stamp "bench_$b"
  dev="--device cuda"
  [ "$b" = noise_warp ] && dev=""  # every noise method on the CPU and the GPU in one run
  timeout "${limit[$b]:-120}" python3 "bench/bench_$b.py" $dev || echo "bench_$b failed or timed out (rc $?)"
done
if [ "${GPU_CHECK_TUNE:-1}" = 1 ]; then
  stamp tune_gp_noise  # every kernel x split of gp_noise, with its error: data for the launcher's choices
  timeout 150 python3 bench/tune_gp_noise.py --device cuda || echo "tune_gp_noise failed or timed out (rc $?)"
fi
stamp done
