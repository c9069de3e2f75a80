"""Qwen2-VL image preprocessing goldens, for
tests/engine/model/qwen2vl_image_test.cpp: Qwen2VLImageProcessor's
smart_resize, resize, rescale, normalise and patch flattening (temporal
patch 2, patch 14, 2x2 merge) for images of several sizes and pixel
limits, including the branches that scale down (max_pixels) and up
(min_pixels).

    tools/golden/.venv/bin/python tools/golden/make_qwen2vl_image_goldens.py
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from transformers import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from make_goldens import procedural_image

# (height, width, min_pixels, max_pixels)
CASES = [
    (60, 90, 56 * 56, 28 * 28 * 1280),   # rounds to 56 x 84
    (70, 42, 56 * 56, 28 * 28 * 1280),   # 2.5 x 28 rounds to even: 56
    (120, 160, 56 * 56, 28 * 28 * 6),    # over max_pixels: scaled down
    (30, 33, 28 * 28 * 8, 28 * 28 * 1280),  # under min_pixels: scaled up
    (29, 250, 56 * 56, 28 * 28 * 1280),  # wide
]
# smart_resize alone, including refusals (None): (height, width, min, max)
SIZES = [(28, 28, 3136, 1003520), (27, 100, 3136, 1003520), (100, 27, 3136, 1003520),
         (30, 7000, 3136, 1003520), (4000, 3000, 3136, 1003520), (1080, 1920, 3136, 1003520),
         (42, 42, 3136, 1003520), (70, 70, 3136, 1003520), (98, 98, 3136, 12544),
         (33, 6000, 3136, 1003520), (501, 333, 200704, 1003520)]


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "tests/data/hf_qwen2vl_image")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tensors, cases, sizes = {}, [], []
    for i, (h, w, lo, hi) in enumerate(CASES):
        pixels = procedural_image(w, h, seed=400 + i)
        Image.fromarray(pixels).save(args.out / f"image_{i}.png")
        proc = Qwen2VLImageProcessor(min_pixels=lo, max_pixels=hi)
        out = proc(images=Image.fromarray(pixels), return_tensors="np")
        tensors[f"c{i}.pixel_values"] = out["pixel_values"].astype(np.float32)
        cases.append({"image": f"image_{i}.png", "height": h, "width": w, "min_pixels": lo,
                      "max_pixels": hi, "grid": [int(v) for v in out["image_grid_thw"][0]]})
    for h, w, lo, hi in SIZES:
        try:
            rh, rw = smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
            sizes.append({"height": h, "width": w, "min_pixels": lo, "max_pixels": hi,
                          "resized": [rh, rw]})
        except ValueError:
            sizes.append({"height": h, "width": w, "min_pixels": lo, "max_pixels": hi,
                          "resized": None})
    save_file(tensors, str(args.out / "goldens.safetensors"))
    (args.out / "goldens.json").write_text(json.dumps(
        {"made_by": "tools/golden/make_qwen2vl_image_goldens.py", "patch": 14, "merge": 2,
         "temporal_patch": 2, "cases": cases, "smart_resize": sizes}, indent=1) + "\n")
    print(f"{len(cases)} images, {len(sizes)} sizes in {args.out}")


if __name__ == "__main__":
    main()
