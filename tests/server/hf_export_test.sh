#!/usr/bin/env bash
# Runs hf_export_test.py on builtin:tiny, builtin:tiny-next (LLaVA-1.6),
# builtin:tiny-qwen2vl and builtin:tiny-qwen25vl:
# exports each as an HF directory with `mosaic model init --preset`, serves
# that directory with `mosaic serve` on 127.0.0.1, and checks that
# transformers 5 (AutoProcessor, Llava[Next]ForConditionalGeneration) loads
# the export and gets the same prompt ids
# as Mosaic for a chat with text and images in mixed order, and the same
# top-20 logprobs within 1e-4. torch and transformers (pinned) come from PyPI
# into a venv under the build directory (about 3 GB with torch's CUDA wheels,
# 1.5 min here); when that venv cannot be made (no network, no ensurepip) the
# test is skipped (exit 77).
#
#   hf_export_test.sh <mosaic binary> <venv dir>
set -u
mosaic="$1"
venv="$2"
here="$(cd "$(dirname "$0")" && pwd)"

have_packages() {
  "$venv/bin/python" -c "
import numpy, PIL, torch, transformers
assert transformers.__version__ == '5.19.0', transformers.__version__
assert PIL.__version__ == '11.1.0', PIL.__version__
assert torch.__version__.split('+')[0] == '2.13.0', torch.__version__" 2>/dev/null
}
if [ ! -x "$venv/bin/python" ] || ! have_packages; then
  python3 -m venv "$venv" >/dev/null 2>&1 || { echo "SKIP: cannot create a venv"; exit 77; }
  # Pillow as tools/golden pins it: Pillow 13 resamples some images (the
  # width growing while the height shrinks) vertical pass first, one 8-bit
  # level away from Pillow <= 12 and from Mosaic.
  echo "installing torch 2.13.0, transformers 5.19.0 and Pillow 11.1.0 into $venv"
  timeout 900 "$venv/bin/pip" install --quiet --progress-bar off \
    torch==2.13.0 transformers==5.19.0 pillow==11.1.0 numpy >"$venv.pip.log" 2>&1 ||
    { echo "SKIP: cannot install torch / transformers from PyPI (see $venv.pip.log)"; exit 77; }
  have_packages || { echo "the venv lacks the pinned packages after pip install (see $venv.pip.log)"; exit 1; }
fi

# shellcheck source=../support/mosaic_serve.sh
. "$here/../support/mosaic_serve.sh"

key="sk-hf-export-test-1"
printf '%s hf\n' "$key" > "$work/keys"
# LLaVA-1.5 (Llama), LLaVA-1.6 (anyres, Mistral), Qwen2-VL, Qwen2.5-VL.
for preset in tiny tiny-next tiny-qwen2vl tiny-qwen25vl; do
  echo "== builtin:$preset"
  "$mosaic" model init --preset "$preset" --out "$work/model-$preset" ||
    { echo "mosaic model init --preset $preset failed"; exit 1; }
  start_mosaic_serve "$mosaic" "$work/keys" "$work/model-$preset"
  MOSAIC_MODEL_DIR="$work/model-$preset" MOSAIC_BASE_URL="http://127.0.0.1:$port/v1" \
    MOSAIC_API_KEY="$key" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
    TOKENIZERS_PARALLELISM=false timeout 300 "$venv/bin/python" "$here/hf_export_test.py"
  rc=$?
  if [ "$rc" != 0 ]; then
    echo "hf_export_test.py exited $rc on builtin:$preset; mosaic serve's log:"
    tail -n 30 "$work/serve.log"
    exit 1
  fi
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=""
done
