#!/usr/bin/env bash
# GPU machine, one call: train the inpaint model (configs/gpu_inpaint.toml) for MINUTES (default 5),
# release it into the package (held-out evaluation, card, sample grid) and copy the weights, the card,
# the run's log and the pictures to $OUT. Usage: bash bench/gpu_train.sh [MINUTES] (after gpu_check.sh
# in the same call, or alone). STEPS=n overrides the step count (a dry run on a CPU: STEPS=2).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
MINUTES=${1:-5}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
source bench/gpu_wheels.sh
python3 -c "import warped_fast._C" 2>/dev/null ||
  python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build_train.log" 2>&1
# The training noise runs the gp_noise fast path on the GPU: use it only if it matches the reference there.
python3 - <<'PY' || export WARPED_FAST_BACKEND=reference
import torch, warped_fast as wf
from warped_fast import reference
from warped_fast.noise.rff import RFFConfig, RFFField, identity_coords
dev = "cuda" if torch.cuda.is_available() else "cpu"
f = RFFField.sample(RFFConfig(3, 3000, shared_features=True), 0, device=dev)
c = identity_coords(64, 64, 2, device=dev) + 100.5
err = (wf.gp_noise(c, f.z, f.b, f.w) - reference.gp_noise(c, f.z, f.b, f.w)).abs().max().item()
print(f"gp_noise fast path vs reference on {dev}: max error {err:.2e}")
raise SystemExit(0 if err < 1e-3 else 1)
PY
RUN=runs/gpu_inpaint
echo "== train ($MINUTES min budget)"
python3 -m warped_fast train --config configs/gpu_inpaint.toml ${STEPS:+--steps $STEPS} --max-minutes "$MINUTES" \
  2>&1 | tail -5
tail -1 "$RUN/loss.csv"
echo "== release + held-out evaluation"
python3 -m warped_fast release-model --task inpaint --run "$RUN" >"$OUT/release.log" 2>&1 || { tail -30 "$OUT/release.log"; exit 1; }
mkdir -p "$OUT/weights_inpaint" "$OUT/run_gpu_inpaint" "$OUT/docs_models"
cp warped_fast/models/weights/inpaint/* "$OUT/weights_inpaint/"
cp warped_fast/models/weights/MODEL_CARD.md "$OUT/"
cp "$RUN"/{config.json,loss.csv,hardware.json} "$OUT/run_gpu_inpaint/"
cp docs/models/inpaint_* "$OUT/docs_models/"
sed -n '/^## inpaint/,/^## sr/p' warped_fast/models/weights/MODEL_CARD.md
