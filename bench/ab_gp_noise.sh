#!/usr/bin/env bash
# A/B of the gp_noise CUDA tuning knobs (kernels/gp_noise_tiles.cuh) on the GPU machine, in one call.
# Each argument is a variant LABEL=DEFINES, DEFINES being "NAME=VALUE;NAME=VALUE" (empty: the defaults).
# Per variant: build the extension with those definitions, run the gp_noise CUDA tests (a summary line)
# and bench/tune_gp_noise.py (every kernel x split, with its error against float64; the rows' labels end
# with [LABEL]). The log goes to $OUT/ab.log, the rows to $OUT/results/gp_noise_tuning.csv. Under a
# minute per variant (in gpu_check.sh on the H200 the build, these tests and the sweep took 15, 8 and 13 s).
# AB_NCU=1 also profiles each variant's kernels under Nsight Compute (bench/profile_gp_noise.py: issue
# rate, pipe use and stall reasons; about 30 s more per variant) into $OUT/ab_ncu.txt. AB_TESTS (test paths)
# replaces the gp_noise tests run per variant.
# Example:
#   bash bench/ab_gp_noise.sh base= fma_phases="WARPED_FAST_GP_MMA_FMA_PHASES=1" \
#     tc_1tile_4blocks="WARPED_FAST_GP_MMA_TILES=1;WARPED_FAST_GP_MMA_BLOCKS=4"
# (the next run to make: docs/benchmarks_h100.md, "What the misses need"). tests/test_cuda_compile.py
# compiles every knob's variant on CPU where nvcc is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export WARPED_FAST_BENCH_OUT="$OUT/results" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
exec > >(tee -a "$OUT/ab.log") 2>&1
[ $# -gt 0 ] || { echo "usage: bench/ab_gp_noise.sh LABEL=DEFINES ..."; exit 2; }
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader
source bench/gpu_wheels.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
T0=$(date +%s)
FAILED=() TIMED=()
for variant in "$@"; do
  label=${variant%%=*} defines=${variant#*=}
  echo "== $label: ${defines:-defaults} ($(( $(date +%s) - T0 )) s)"
  WARPED_FAST_CUDA=ON CMAKE_ARGS="-DWARPED_FAST_CUDA_ARCHS=90 -DWARPED_FAST_CUDA_DEFINES='$defines'" \
    python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; FAILED+=("$label: build"); continue; }
  timeout 120 python3 -m pytest -m cuda -q -p no:cacheprovider --tb=line ${AB_TESTS:-tests/ops/test_gp_noise.py} 2>&1 | tail -3
  rc=${PIPESTATUS[0]}
  # a variant that fails its tests is not timed
  [ "$rc" = 0 ] || { FAILED+=("$label: tests (rc $rc)"); continue; }
  WARPED_FAST_BENCH_TAG=$label timeout 150 python3 bench/tune_gp_noise.py --device cuda \
    | grep -E "split auto|split 1 |split 8 |not available"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ]; then TIMED+=("$label"); else FAILED+=("$label: tune_gp_noise (rc $rc)"); fi
  if [ "${AB_NCU:-0}" != 0 ] && [ -n "$NCU" ]; then
    timeout 120 "$NCU" --clock-control none -k regex:gp_ --section SpeedOfLight --section ComputeWorkloadAnalysis \
      --section WarpStateStats --section LaunchStats python3 bench/profile_gp_noise.py >"$OUT/ncu.tmp" 2>&1 \
      || echo "ncu failed or timed out [$label]"
    grep -E "^  gp_|Duration|Issued Ipc Active|No Eligible|Warp Cycles Per Issued" "$OUT/ncu.tmp" | head -24
    { echo "== $label"; cat "$OUT/ncu.tmp"; } >>"$OUT/ab_ncu.txt" && rm -f "$OUT/ncu.tmp"
  fi
done
rm -f "$OUT/build.log"
# the variants side by side (ratios to the first variant that passed)
[ ${#TIMED[@]} -gt 0 ] && python3 bench/ab_summary.py "$OUT/results/gp_noise_tuning.csv" "${TIMED[@]}"
echo "== done ($(( $(date +%s) - T0 )) s); a plain build (no WARPED_FAST_CUDA_DEFINES) is the defaults again"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf '!! failed: %s\n' "${FAILED[@]}"
  exit 1
fi
