"""LLaVA-NeXT (LLaVA-1.6) anyres goldens: what HF transformers computes for
images of many sizes, for tests/engine/model/anyres_test.cpp.

For each image: the best grid resolution, the number of views, the views'
pixel values (LlavaNextImageProcessor), the number of image tokens
(LlavaNextProcessor's count) and the packed features
(LlavaNextForConditionalGeneration.pack_image_features) of seeded random
per-view features with a random image_newline. Tile size 56 (patch 14, so
4x4 features per view) keeps the files small; the pinpoints are LLaVA-1.6's
five grids scaled from 336 to 56.

    tools/golden/.venv/bin/python tools/golden/make_anyres_goldens.py
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig,
                          LlavaNextForConditionalGeneration, LlavaNextImageProcessor,
                          LlavaNextProcessor)
from transformers.image_processing_utils import select_best_resolution

from make_goldens import procedural_image

TILE = 56
PATCH = 14
PINPOINTS = [[112, 56], [56, 112], [112, 112], [56, 168], [168, 56]]
DIM = 8
# (height, width): wide, tall, square, tiny (upscaled), very wide and very
# tall (odd centred padding: a tile one pixel short), and sizes where
# several grids tie on effective area.
SIZES = [(72, 96), (90, 60), (56, 56), (20, 17), (61, 200), (200, 61), (113, 57),
         (57, 113), (100, 100), (33, 150), (150, 33), (170, 169), (47, 95)]
# Cases whose pixel values are kept (190 KB each): wide, odd horizontal
# padding (a 55-px tile), upscaled, odd vertical padding. The others keep
# their grid, count and packing.
PIXEL_CASES = (0, 1, 3, 9)


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "tests/data/hf_anyres")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    proc = LlavaNextImageProcessor(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
        image_grid_pinpoints=PINPOINTS)
    cfg = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=TILE, patch_size=PATCH),
        text_config=LlamaConfig(hidden_size=DIM, intermediate_size=16, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, vocab_size=64),
        image_grid_pinpoints=PINPOINTS, vision_feature_select_strategy="default",
        image_token_index=63)
    model = LlavaNextForConditionalGeneration(cfg).eval()
    newline = torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    per_side = TILE // PATCH
    # LlavaNextProcessor's token count needs only these of its attributes
    # (no tokenizer).
    counter = LlavaNextProcessor.__new__(LlavaNextProcessor)
    counter.image_processor = proc
    counter.patch_size = PATCH
    counter.num_additional_image_tokens = 1

    tensors = {"newline": newline.numpy().astype(np.float32)}
    cases = []
    for i, (h, w) in enumerate(SIZES):
        pixels = procedural_image(w, h, seed=100 + i)
        Image.fromarray(pixels).save(args.out / f"image_{i}.png")
        out = proc(images=Image.fromarray(pixels), return_tensors="np")
        pv = out["pixel_values"][0].astype(np.float32)  # [views, 3, TILE, TILE]
        best = select_best_resolution((h, w), PINPOINTS)
        # LlavaNextProcessor's count, minus the class token for "default".
        count = counter._get_number_of_features(h, w, TILE, TILE) - 1
        feats = torch.randn(pv.shape[0], per_side * per_side, DIM,
                            generator=torch.Generator().manual_seed(200 + i))
        with torch.no_grad():
            packed, lens = model.pack_image_features([feats], torch.tensor([[h, w]]), "default",
                                                     image_newline=newline)
        assert int(lens[0]) == count, (h, w, int(lens[0]), count)
        if i in PIXEL_CASES:
            tensors[f"c{i}.pixel_values"] = pv
        tensors[f"c{i}.features"] = feats.numpy().astype(np.float32)
        tensors[f"c{i}.packed"] = packed.numpy().astype(np.float32)
        cases.append({"image": f"image_{i}.png", "height": h, "width": w,
                      "best": list(best), "views": int(pv.shape[0]), "tokens": count,
                      "pixels": i in PIXEL_CASES})
    save_file(tensors, str(args.out / "goldens.safetensors"))
    manifest = {"tile": TILE, "patch": PATCH, "dim": DIM, "pinpoints": PINPOINTS, "cases": cases,
                "made_by": "tools/golden/make_anyres_goldens.py"}
    (args.out / "goldens.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(cases)} cases in {args.out}")


if __name__ == "__main__":
    main()
