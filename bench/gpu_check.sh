#!/usr/bin/env bash
# GPU machine check, one call: build the CUDA extension, run the cuda-marked tests and the kernel and
# noise-warp benchmarks, print the tables last. Everything goes to $OUT/check.log and the benchmark CSVs
# to $OUT/results (the device tool brings back at most 8 files; past 8, the CSVs as one archive). About 4
# to 6 minutes; the timeouts below bound each step. Exits non-zero when the build, a test or a step fails (after running the rest).
# GPU_CHECK_SAMPLER=1 adds the sampler benchmark (SDXL-shaped UNet, compiled: several minutes more).
# GPU_CHECK_TESTS (test paths) and GPU_CHECK_BENCHES (names without bench_) narrow a rerun,
# GPU_CHECK_NOISE_DEVICE=cuda skips the CPU half of bench_noise_warp;
# GPU_CHECK_TUNE=0 skips the launch sweeps (bench/tune_gp_noise.py, bench/tune_warp.py); GPU_CHECK_NCU=0 skips the
# Nsight Compute profile of the gp_noise kernels ($OUT/ncu_gp_noise.txt, with each kernel's stall
# reasons); GPU_CHECK_NCU=2 adds the stall samples per SASS instruction of the tensor-core kernel and of
# the 128x128 independent FMA kernel ($OUT/ncu_tc_sass.csv, ncu_indep_sass.csv; about two minutes more).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export WARPED_FAST_BENCH_OUT="$OUT/results" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
LOG="$OUT/check.log"
exec > >(tee -a "$LOG") 2>&1
T0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - T0 )) s)"; }
FAILED=()
fail() { echo "!! $1"; FAILED+=("$1"); }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
nvcc --version | tail -2
source bench/gpu_wheels.sh
[ -f "$OUT/deps.log" ] && { cat "$OUT/deps.log"; rm -f "$OUT/deps.log"; }  # into check.log: 8 files come back

stamp build
# the default tuning knobs (CMakeLists.txt never caches an A/B build's, ab_gp_noise.sh; said here as well)
WARPED_FAST_CUDA=ON CMAKE_ARGS="-DWARPED_FAST_CUDA_ARCHS=90 -DWARPED_FAST_CUDA_DEFINES=" \
  python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 \
  || { tail -60 "$OUT/build.log"; exit 1; }
rm -f "$OUT/build.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "import warped_fast, json; print(json.dumps(warped_fast.backend_info()))"

stamp "cuda tests"
# one line per failure (the assertion message names the errors and the tolerance); Triton compiled,
# not interpreted (tests/conftest.py defaults to the interpreter)
TRITON_INTERPRET=0 timeout 240 python3 -m pytest -m cuda -q -p no:cacheprovider --tb=line ${GPU_CHECK_TESTS:-tests} 2>&1 | tail -40
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || fail "cuda tests (rc $rc)"

declare -A limit=([gp_noise]=100 [warp]=60 [guidance]=60 [noise_warp]=240 [sampler]=400)
benches=${GPU_CHECK_BENCHES-gp_noise warp guidance noise_warp}  # set but empty: none
[ "${GPU_CHECK_SAMPLER:-0}" = 1 ] && benches="$benches sampler"
for b in $benches; do
  stamp "bench_$b"
  dev="--device cuda"
  # every noise method on the CPU and the GPU in one run (GPU_CHECK_NOISE_DEVICE=cuda: the GPU only)
  [ "$b" = noise_warp ] && dev="${GPU_CHECK_NOISE_DEVICE:+--device $GPU_CHECK_NOISE_DEVICE}"
  timeout "${limit[$b]:-120}" python3 "bench/bench_$b.py" $dev || fail "bench_$b failed or timed out (rc $?)"
done
if [ "${GPU_CHECK_TUNE:-1}" = 1 ]; then
  stamp tune_gp_noise  # every kernel x split of gp_noise, with its error: data for the launcher's choices
  timeout 150 python3 bench/tune_gp_noise.py --device cuda || fail "tune_gp_noise failed or timed out (rc $?)"
  stamp tune_warp  # the forward warp's launches and cache hints, with each one's difference
  timeout 150 python3 bench/tune_warp.py --device cuda || fail "tune_warp failed or timed out (rc $?)"
fi
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ "${GPU_CHECK_NCU:-1}" != 0 ] && [ -n "$NCU" ]; then
  stamp "ncu gp_noise"  # issue and pipe use, occupancy and stall reasons of each gp_noise kernel, one launch each
  NCU_RUN=("$NCU" --clock-control none)
  timeout 120 "${NCU_RUN[@]}" -k regex:gp_ --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section InstructionStats --section Occupancy --section SchedulerStats --section WarpStateStats \
    --section LaunchStats --section SourceCounters python3 bench/profile_gp_noise.py >"$OUT/ncu_gp_noise.txt" 2>&1 \
    || echo "ncu failed or timed out (rc $?)"
  # cycles per issued instruction spent in each stall reason (same file)
  timeout 90 "${NCU_RUN[@]}" -k regex:gp_ --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
    python3 bench/profile_gp_noise.py >>"$OUT/ncu_gp_noise.txt" 2>&1 || echo "ncu stall metrics failed (rc $?)"
  grep -E "^  gp_|Duration|Issued Ipc Active|Achieved Occupancy|No Eligible|Warp Cycles Per Issued" \
    "$OUT/ncu_gp_noise.txt" | head -40
  if [ "${GPU_CHECK_NCU:-1}" = 2 ]; then
    # stall samples per SASS instruction: the tensor-core kernel and the 128x128 independent FMA kernel
    for k in gp_shared_mma:tc gp_independent:indep; do
      stamp "ncu ${k%%:*}, per SASS instruction"
      timeout 120 "${NCU_RUN[@]}" -k "regex:${k%%:*}" -c 1 --section SourceCounters --import-source yes -f \
        -o "/tmp/ncu_${k##*:}" python3 bench/profile_gp_noise.py >/dev/null 2>&1 \
        && "$NCU" -i "/tmp/ncu_${k##*:}.ncu-rep" --page source --print-source sass --csv >"$OUT/ncu_${k##*:}_sass.csv" 2>&1 \
        || echo "ncu source page failed (rc $?)"
    done
  fi
fi
# The device tool brings back at most 8 files: past that (GPU_CHECK_NCU=2, GPU_CHECK_SAMPLER=1), the
# result CSVs travel as one archive, $OUT/results.tar.gz.
if [ "$(find "$OUT" -type f | wc -l)" -gt 8 ] && [ -d "$OUT/results" ]; then
  tar czf "$OUT/results.tar.gz" -C "$OUT" results && rm -r "$OUT/results"
  echo "result CSVs in $OUT/results.tar.gz"
fi
stamp done
if [ ${#FAILED[@]} -gt 0 ]; then
  printf '!! failed: %s\n' "${FAILED[@]}"
  exit 1
fi
