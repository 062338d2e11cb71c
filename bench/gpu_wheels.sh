# Sourced by the GPU scripts. The GPU machine (Python 3.12) has torch, triton, the build tools and most
# of the dependencies, but not diffusers and no network: the missing pure-Python packages travel as wheels
# in ./wheels (carried with the call), fetched here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d wheels diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0
if compgen -G "wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    wheels/*.whl >"$OUT/deps.log" 2>&1 || echo "the carried wheels did not install (see $OUT/deps.log)"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import diffusers" 2>/dev/null || echo "diffusers is missing: the model parts will fail (carry ./wheels)"
