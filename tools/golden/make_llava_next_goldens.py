#!/usr/bin/env python3
"""Regenerates tests/data/hf_tiny_llava_next/: a tiny random LLaVA-1.6
(LlavaNextForConditionalGeneration, anyres) checkpoint with a Mistral
decoder, saved by HF transformers, plus what transformers (PyTorch, CPU,
float32) computes on it, for tests/engine/hf_llava_next_test.cpp.

The vision tower, tokenizer and image geometry are those of
tests/data/hf_tiny_llava (56 px views, 14 px patches: 16 features a view)
with LLaVA-1.6's five grids scaled from 336 to 56 px, so an image is at
most 88 tokens, fewer by its size (36 to 72 here).

    tools/golden/.venv/bin/python tools/golden/make_llava_next_goldens.py

Outputs (in the fixture directory): config.json, model.safetensors,
preprocessor_config.json, tokenizer files (save_pretrained), and goldens/:
  image_*.png                 procedural test images of several sizes
  goldens.json                prompts, images, token ids before and after
                              HF's expansion of <image>, greedy continuations
  goldens.safetensors         per prompt p and image i:
                                p{p}.i{i}.pixel_values [views, 3, 56, 56]
                                p{p}.i{i}.vision_features [views, 16, 64]
                                p{p}.i{i}.image_embeddings [tokens, hidden]
                                  (projected, unpadded, with image_newline)
                              and p{p}.logits [vocab] (last position)
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                          LlavaNextImageProcessor, LlavaNextProcessor, MistralConfig)

from make_goldens import (MAX_NEW_TOKENS, MIN_GREEDY_MARGIN, init_weights, load_llama_tokenizer,
                          procedural_image)

SEED = 20261209
TILE = 56
PATCH = 14
PINPOINTS = [[112, 56], [56, 112], [112, 112], [56, 168], [168, 56]]

# (file, width, height, seed): wide (2x2 grid, unpadded rows), tall,
# very wide (1x3 grid, odd centred padding), small square (upscaled).
IMAGES = [
    ("image_0.png", 96, 72, 21),
    ("image_1.png", 60, 90, 22),
    ("image_2.png", 200, 61, 23),
    ("image_3.png", 40, 40, 24),
]

PROMPTS = [
    ("[INST] <image>\nWhat is shown in this picture? [/INST]", ["image_0.png"]),
    ("[INST] Describe the colours of this photo. <image>\n[/INST]", ["image_1.png"]),
    ("[INST] Compare <image> with <image>. Which one is brighter? [/INST]",
     ["image_2.png", "image_3.png"]),
    ("[INST] Here is a picture <image> and another one <image> and a third <image>\n"
     "What changed between them? [/INST]", ["image_3.png", "image_0.png", "image_1.png"]),
]


def tiny_config(sp_vocab):
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_channels=3, image_size=TILE,
                              patch_size=PATCH, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                              projection_dim=32)
    # Mistral as LLaVA-1.6-Mistral-7B configures it (no sliding window).
    text = MistralConfig(vocab_size=sp_vocab + 1, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         hidden_act="silu", max_position_embeddings=1024, rms_norm_eps=1e-5,
                         rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlavaNextConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                           image_token_index=sp_vocab, projector_hidden_act="gelu",
                           vision_feature_layer=-2, vision_feature_select_strategy="default",
                           image_grid_pinpoints=PINPOINTS, tie_word_embeddings=False)


def make_processor(tok):
    image_proc = LlavaNextImageProcessor(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
        image_grid_pinpoints=PINPOINTS, do_pad=True)
    return LlavaNextProcessor(image_processor=image_proc, tokenizer=tok, patch_size=PATCH,
                              vision_feature_select_strategy="default", image_token="<image>",
                              num_additional_image_tokens=1)


def write_goldens(out, model, processor):
    tok = processor.tokenizer
    cfg = model.config
    image_token = tok.convert_tokens_to_ids("<image>")
    gold = out / "goldens"
    tensors = {}
    prompts = []
    for p, (text, files) in enumerate(PROMPTS):
        images = [Image.open(gold / f).convert("RGB") for f in files]
        batch = processor(images=images, text=text, return_tensors="pt")
        input_ids = batch["input_ids"]
        pixel_values = batch["pixel_values"].to(torch.float32)  # [n, max views, 3, T, T]
        image_sizes = batch["image_sizes"]
        with torch.no_grad():
            feats = model.get_image_features(pixel_values, image_sizes,
                                             vision_feature_layer=cfg.vision_feature_layer,
                                             vision_feature_select_strategy="default")
            packed, lens = model.pack_image_features(feats, image_sizes, "default",
                                                     image_newline=model.image_newline)
            logits = model(input_ids=input_ids, pixel_values=pixel_values,
                           image_sizes=image_sizes,
                           attention_mask=batch["attention_mask"]).logits[0, -1]
            gen = model.generate(input_ids=input_ids, pixel_values=pixel_values,
                                 image_sizes=image_sizes, attention_mask=batch["attention_mask"],
                                 max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
        assert int((input_ids == image_token).sum()) == int(lens.sum())
        counts = [int(n) for n in lens]
        start = 0
        for i, (f, n) in enumerate(zip(feats, counts)):
            views = f.shape[0]
            tensors[f"p{p}.i{i}.pixel_values"] = pixel_values[i, :views].contiguous()
            with torch.no_grad():
                vt = model.vision_tower(pixel_values[i, :views], output_hidden_states=True)
            tensors[f"p{p}.i{i}.vision_features"] = \
                vt.hidden_states[cfg.vision_feature_layer][:, 1:].contiguous()
            tensors[f"p{p}.i{i}.image_embeddings"] = packed[start:start + n].contiguous()
            start += n
        tensors[f"p{p}.logits"] = logits.contiguous()
        new_tokens = gen.sequences[0, input_ids.shape[1]:].tolist()
        assert new_tokens[0] == int(torch.argmax(logits))
        margins = []
        for scores in gen.scores:
            top = torch.topk(scores[0], 2).values
            margins.append(float((top[0] - top[1]) / scores[0].abs().max()))
        assert min(margins) >= MIN_GREEDY_MARGIN, \
            f"prompt {p}: a greedy step is a near tie ({min(margins):.2e}); change the seed"
        prompts.append({
            "text": text, "images": files,
            "image_sizes": [[int(h), int(w)] for h, w in image_sizes.tolist()],
            "image_tokens": counts,
            "input_ids": tok(text)["input_ids"],
            "expanded_input_ids": input_ids[0].tolist(),
            "greedy_tokens": new_tokens,
            "min_greedy_margin": round(min(margins), 6),
        })
        print(f"prompt {p}: {input_ids.shape[1]} tokens, images {counts}, greedy {new_tokens}, "
              f"min margin {min(margins):.3f}")
    save_file(tensors, str(gold / "goldens.safetensors"), metadata={"format": "pt"})
    manifest = {
        "generator": "tools/golden/make_llava_next_goldens.py",
        "versions": {"transformers": transformers.__version__,
                     "torch": torch.__version__.split("+")[0]},
        "model_safetensors_sha256":
            hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
        "pinpoints": PINPOINTS,
        "prompts": prompts,
    }
    (gold / "goldens.json").write_text(json.dumps(manifest, indent=1) + "\n")


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "tests/data/hf_tiny_llava_next")
    ap.add_argument("--tokenizer-model", type=Path,
                    default=root / "tests/data/hf_tiny_llava/tokenizer.model")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sp_path = out / "tokenizer.model"
    shutil.copyfile(args.tokenizer_model, sp_path)  # already has Llama's dummy prefix
    tok = load_llama_tokenizer(sp_path)

    torch.manual_seed(SEED)
    model = LlavaNextForConditionalGeneration(tiny_config(tok.sp_model.get_piece_size()))
    model = model.to(torch.float32).eval()
    init_weights(model, SEED)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out, safe_serialization=True)
    model = LlavaNextForConditionalGeneration.from_pretrained(
        out, torch_dtype=torch.float32, attn_implementation="eager").eval()
    processor = make_processor(tok)
    processor.save_pretrained(out)

    gold = out / "goldens"
    gold.mkdir()
    for name, w, h, seed in IMAGES:
        Image.fromarray(procedural_image(w, h, seed), "RGB").save(gold / name, optimize=False)
    write_goldens(out, model, processor)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
