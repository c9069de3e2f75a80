"""Qwen2-VL M-RoPE goldens, for tests/engine/mrope_test.cpp.

For prompts with images of several grids at several positions (and the
same images moved): the (temporal, height, width) position ids of
Qwen2VLForConditionalGeneration.get_rope_index, the rope delta, and
apply_multimodal_rotary_pos_emb of seeded random keys at those positions
(head_dim 16, mrope_section [2, 3, 3], theta 10000).

    tools/golden/.venv/bin/python tools/golden/make_mrope_goldens.py
"""

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (Qwen2VLForConditionalGeneration,
                                                            Qwen2VLRotaryEmbedding,
                                                            apply_multimodal_rotary_pos_emb)

VISION_START, VISION_END, IMAGE = 90, 91, 92
MERGE = 2
HEAD_DIM, HEADS = 16, 2
SECTION = [2, 3, 3]
THETA = 10000.0

# A prompt: a list of text lengths and images (t, h, w) in patches, in order.
PROMPTS = [
    [5, (1, 4, 6), 3, (1, 6, 4), 2],
    [12, (1, 4, 6), 1],               # the first image, moved
    [2, (1, 6, 4), 7, (1, 4, 6), 4],  # both, swapped
    [9],                              # text only
    [1, (2, 4, 4), 3],                # two frames (t = 2)
    [(1, 8, 2), 6],                   # image first
]


def ids_of(prompt):
    ids, grids, text = [], [], 0
    for part in prompt:
        if isinstance(part, int):
            ids += [10 + (text + k) % 50 for k in range(part)]
            text += part
        else:
            t, h, w = part
            ids += [VISION_START] + [IMAGE] * (t * (h // MERGE) * (w // MERGE)) + [VISION_END]
            grids.append([t, h, w])
    return ids, grids


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "tests/data/hf_mrope")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    cfg = Qwen2VLConfig(hidden_size=HEAD_DIM * HEADS, num_attention_heads=HEADS,
                        num_key_value_heads=HEADS, rope_theta=THETA,
                        rope_scaling={"type": "mrope", "mrope_section": SECTION},
                        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
                        image_token_id=IMAGE, video_token_id=93,
                        vision_config={"spatial_merge_size": MERGE})
    stub = SimpleNamespace(config=cfg)
    rope = Qwen2VLRotaryEmbedding(config=cfg)
    tensors, cases = {}, []
    for i, prompt in enumerate(PROMPTS):
        ids, grids = ids_of(prompt)
        input_ids = torch.tensor([ids])
        thw = torch.tensor(grids) if grids else None
        pos, delta = Qwen2VLForConditionalGeneration.get_rope_index(
            stub, input_ids, thw, None, torch.ones_like(input_ids))
        keys = torch.randn(1, HEADS, len(ids), HEAD_DIM,
                           generator=torch.Generator().manual_seed(300 + i))
        cos, sin = rope(keys, pos)
        _, rotated = apply_multimodal_rotary_pos_emb(keys, keys, cos, sin, SECTION)
        tensors[f"p{i}.keys"] = keys[0].transpose(0, 1).contiguous().numpy().astype(np.float32)
        tensors[f"p{i}.rotated"] = rotated[0].transpose(0, 1).contiguous().numpy().astype(np.float32)
        cases.append({"ids": ids, "grids": grids, "positions": pos[:, 0, :].tolist(),
                      "delta": int(delta[0, 0])})
    save_file(tensors, str(args.out / "goldens.safetensors"))
    manifest = {"made_by": "tools/golden/make_mrope_goldens.py", "vision_start": VISION_START,
                "vision_end": VISION_END, "image": IMAGE, "merge": MERGE, "head_dim": HEAD_DIM,
                "heads": HEADS, "mrope_section": SECTION, "theta": THETA, "prompts": cases}
    (args.out / "goldens.json").write_text(json.dumps(manifest) + "\n")
    print(f"{len(cases)} prompts in {args.out}")


if __name__ == "__main__":
    main()
