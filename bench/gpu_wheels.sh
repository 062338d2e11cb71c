# Sourced by the GPU scripts: the GPU machine has torch, triton and the build tools but no network;
# pure-Python dependencies come from wheels carried in ./wheels (`pip download` them here first).
if [ -d wheels ]; then
  pip install -q --no-index --find-links wheels diffusers tqdm safetensors imageio av opencv-python-headless \
    scipy scikit-image scikit-learn matplotlib torchmetrics >"$OUT/deps.log" 2>&1 ||
    echo "some wheels did not install (see $OUT/deps.log)"
fi
