#!/usr/bin/env python3
"""Regenerates tests/data/hf_tiny_qwen2vl/ and tests/data/hf_tiny_qwen25vl/:
tiny random Qwen2-VL (Qwen2VLForConditionalGeneration) and Qwen2.5-VL
(Qwen2_5_VLForConditionalGeneration) checkpoints saved by HF transformers,
plus what transformers (PyTorch, CPU, float32, eager attention) computes on
them.

Both share the byte-level BPE of tests/data/hf_bpe (Qwen2's tokenizer
layout with Qwen2-VL's special tokens), Qwen2-VL-7B-Instruct's chat
template, Qwen2VLImageProcessor with min_pixels 56*56 and max_pixels
28*28*64 (at most 64 merged tokens an image) and the same decoder (Qwen2:
hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16, q/k/v bias, M-RoPE
section [2, 3, 3], theta 1e6). The vision towers differ: Qwen2-VL's
(LayerNorm, quick_gelu MLP, full attention per image) and Qwen2.5-VL's
(RMSNorm, SwiGLU MLP, window attention in blocks 0 and 2 with 2x2-token
windows, full attention in blocks 1 and 3).

    tools/golden/.venv/bin/python tools/golden/make_qwen2vl_goldens.py [--family qwen2vl|qwen25vl|all]

Outputs (in each fixture directory): config.json, generation_config.json,
model.safetensors (save_pretrained, f32), tokenizer and processor files
(save_pretrained: tokenizer.json, tokenizer_config.json with the chat
template, preprocessor_config.json, chat_template.json, ...), and goldens/:
  image_*.png                 procedural test images of several sizes
  goldens.json                chat messages, templated text, images, grids,
                              token ids before and after HF's expansion of
                              <|image_pad|>, M-RoPE position ids and rope
                              delta, greedy continuations
  goldens.safetensors         per prompt p and image i:
                                p{p}.i{i}.pixel_values [patches, 3*2*14*14]
                                p{p}.i{i}.patch_embeds [patches, vision dim]
                                p{p}.i{i}.image_embeddings [tokens, 64]
                                  (model.visual on that image alone)
                                p{p}.i{i}.window_index [tokens] (Qwen2.5-VL; float32, as Mosaic reads safetensors)
                              and p{p}.logits [vocab] (last position)
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2_5_VLProcessor, Qwen2TokenizerFast, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                          Qwen2VLProcessor)

from make_goldens import MAX_NEW_TOKENS, MIN_GREEDY_MARGIN, procedural_image

PATCH = 14
MERGE = 2
TEMPORAL_PATCH = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64

# Qwen2-VL-7B-Instruct's chat template (chat_template.json and
# tokenizer_config.json of Qwen/Qwen2-VL-7B-Instruct; Qwen2.5-VL's
# processor uses the same one).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

# (file, width, height, seed) -> resized (w x h), grid (t, h, w), merged
# tokens, Qwen2.5-VL windows (2x2 merged tokens):
#   96x72  -> 84x84,   (1, 6, 6),  9 tokens, 4 windows (2x2, 2x1, 1x2, 1x1)
#   60x90  -> 56x84,   (1, 6, 4),  6 tokens, 2 windows (tall)
#   200x61 -> 196x56,  (1, 4, 14), 14 tokens, 4 windows (wide; last is 2x1)
#   40x40  -> 56x56,   (1, 4, 4),  4 tokens, 1 window (upscaled by min_pixels)
IMAGES = [
    ("image_0.png", 96, 72, 31),
    ("image_1.png", 60, 90, 32),
    ("image_2.png", 200, 61, 33),
    ("image_3.png", 40, 40, 34),
]


def _img(name):
    return {"type": "image", "image": name}


def _txt(text):
    return {"type": "text", "text": text}


# Chat messages; the images of a prompt are its image entries in order.
PROMPTS = [
    # one image first
    [{"role": "user", "content": [_img("image_0.png"), _txt("What is shown in this picture?")]}],
    # text, then the image
    [{"role": "user", "content": [_txt("Describe the colours of this photo."),
                                  _img("image_1.png")]}],
    # two images, with text between them
    [{"role": "user", "content": [_txt("Compare "), _img("image_2.png"), _txt(" with "),
                                  _img("image_3.png"), _txt(". Which one is brighter?")]}],
    # three images with text between, a given system prompt and an earlier turn
    [{"role": "system", "content": "You are a careful visual assistant."},
     {"role": "user", "content": [_txt("Hello!")]},
     {"role": "assistant", "content": [_txt("Hi, how can I help?")]},
     {"role": "user", "content": [_txt("Here is a picture "), _img("image_3.png"),
                                  _txt(" and another one "), _img("image_0.png"),
                                  _txt(" and a third "), _img("image_1.png"),
                                  _txt("\nWhat changed between them?")]}],
    # text only (get_rope_index's plain path)
    [{"role": "user", "content": "Count from one to five, please."}],
]


def qwen2vl_vision():
    return dict(depth=2, embed_dim=32, hidden_size=64, hidden_act="quick_gelu", mlp_ratio=2,
                num_heads=4, in_channels=3, patch_size=PATCH, spatial_merge_size=MERGE,
                temporal_patch_size=TEMPORAL_PATCH)


def qwen25vl_vision():
    # window_size is in pixels: 56 // MERGE // PATCH = 2 merged tokens a side.
    return dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                hidden_act="silu", in_channels=3, patch_size=PATCH, spatial_merge_size=MERGE,
                temporal_patch_size=TEMPORAL_PATCH, tokens_per_second=2, window_size=56,
                fullatt_block_indexes=[1, 3])


# Seeds: the first from 20261210 up whose greedy steps all have a top-1 to
# top-2 margin of at least 4e-3 of max |logit| (twice MIN_GREEDY_MARGIN).
FAMILIES = {
    "qwen2vl": dict(dir="hf_tiny_qwen2vl", seed=20261221, config=Qwen2VLConfig,
                    model=Qwen2VLForConditionalGeneration, processor=Qwen2VLProcessor,
                    vision=qwen2vl_vision),
    "qwen25vl": dict(dir="hf_tiny_qwen25vl", seed=20261213, config=Qwen2_5_VLConfig,
                     model=Qwen2_5_VLForConditionalGeneration, processor=Qwen2_5_VLProcessor,
                     vision=qwen25vl_vision),
}


def load_tokenizer(path):
    """Qwen2TokenizerFast on tests/data/hf_bpe/tokenizer.json, configured as
    Qwen2-VL-7B-Instruct's tokenizer_config.json (no BOS, eos <|im_end|>,
    pad <|endoftext|>, no unk)."""
    tok = Qwen2TokenizerFast(tokenizer_file=str(path), unk_token=None, bos_token=None,
                             eos_token="<|im_end|>", pad_token="<|endoftext|>",
                             additional_special_tokens=SPECIALS[1:], errors="replace",
                             clean_up_tokenization_spaces=False, split_special_tokens=False,
                             model_max_length=32768, padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(family, tok):
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    assert len(set(ids.values())) == len(SPECIALS) and max(ids.values()) < len(tok), ids
    spec = FAMILIES[family]
    return spec["config"](
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=1000000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        # HF's causal mask applies sliding_window whenever it is set, whatever
        # use_sliding_window says; 32768 (as Qwen2-VL's configs) is past any
        # position here.
        use_sliding_window=False, sliding_window=32768, max_window_layers=2,
        tie_word_embeddings=False, attention_dropout=0.0,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_config=spec["vision"]())


def init_weights(model, seed):
    """make_goldens.init_weights with the merger's ln_q counted as a norm:
    every parameter from a seeded generator in name order; norm weights
    1 + N(0, 0.1), biases N(0, 0.1), token embeddings N(0, 1), everything
    else N(0, 0.15), so that logits are far from flat."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name or ".ln_q." in name:
                p.copy_(noise * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):
                p.copy_(noise * 0.1)
            elif "embed_tokens" in name:
                p.copy_(noise)
            else:
                p.copy_(noise * 0.15)


def make_processor(family, tok):
    image_proc = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                                       patch_size=PATCH, temporal_patch_size=TEMPORAL_PATCH,
                                       merge_size=MERGE)
    return FAMILIES[family]["processor"](image_processor=image_proc, tokenizer=tok,
                                         chat_template=CHAT_TEMPLATE)


def images_of(messages):
    return [c["image"] for m in messages if isinstance(m["content"], list)
            for c in m["content"] if c["type"] == "image"]


def write_goldens(family, out, model, processor):
    tok = processor.tokenizer
    cfg = model.config
    windowed = family == "qwen25vl"
    gold = out / "goldens"
    tensors = {}
    prompts = []
    for p, messages in enumerate(PROMPTS):
        files = images_of(messages)
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = [Image.open(gold / f).convert("RGB") for f in files]
        batch = processor(images=images or None, text=text, return_tensors="pt")
        input_ids = batch["input_ids"]
        pixel_values = batch.get("pixel_values")
        grid = batch.get("image_grid_thw")
        with torch.no_grad():
            rope_kwargs = dict(input_ids=input_ids, image_grid_thw=grid, video_grid_thw=None,
                               attention_mask=batch["attention_mask"])
            position_ids, rope_delta = model.get_rope_index(**rope_kwargs)
            logits = model(**batch).logits[0, -1]
            gen = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
        counts = [int(t * h * w) // (MERGE * MERGE) for t, h, w in
                  (grid.tolist() if grid is not None else [])]
        assert int((input_ids == cfg.image_token_id).sum()) == sum(counts)
        assert len(counts) == len(files)
        image_info = []
        start = 0
        for i, n in enumerate(counts):
            g = grid[i:i + 1]
            patches = int(g.prod())
            pv = pixel_values[start:start + patches]
            start += patches
            with torch.no_grad():
                embeds = model.visual.patch_embed(pv)
                image_embeds = model.visual(pv, grid_thw=g)
            assert image_embeds.shape == (n, cfg.hidden_size), image_embeds.shape
            tensors[f"p{p}.i{i}.pixel_values"] = pv.contiguous()
            tensors[f"p{p}.i{i}.patch_embeds"] = embeds.contiguous()
            tensors[f"p{p}.i{i}.image_embeddings"] = image_embeds.contiguous()
            info = {"grid_thw": [int(v) for v in g[0]], "tokens": n}
            if windowed:
                window_index, cu = model.visual.get_window_index(g)
                cu = torch.unique_consecutive(torch.tensor(cu)).tolist()
                tensors[f"p{p}.i{i}.window_index"] = window_index.to(torch.float32).contiguous()
                info["cu_window_seqlens"] = cu
                info["windows"] = len(cu) - 1
            image_info.append(info)
        assert pixel_values is None or start == pixel_values.shape[0]
        tensors[f"p{p}.logits"] = logits.contiguous()
        new_tokens = gen.sequences[0, input_ids.shape[1]:].tolist()
        assert new_tokens[0] == int(torch.argmax(logits))
        assert len(new_tokens) == MAX_NEW_TOKENS, f"prompt {p}: stopped early: {new_tokens}"
        margins = []
        for scores in gen.scores:
            top = torch.topk(scores[0], 2).values
            margins.append(float((top[0] - top[1]) / scores[0].abs().max()))
        assert min(margins) >= MIN_GREEDY_MARGIN, \
            f"prompt {p}: a greedy step is a near tie ({min(margins):.2e}); change the seed"
        prompts.append({
            "messages": messages,
            "text": text,
            "images": files,
            "image_grid_thw": [x["grid_thw"] for x in image_info],
            "image_tokens": counts,
            **({"image_windows": [x["cu_window_seqlens"] for x in image_info]}
               if windowed else {}),
            "input_ids": tok(text)["input_ids"],
            "expanded_input_ids": input_ids[0].tolist(),
            "position_ids": position_ids[:, 0, :].tolist(),
            "rope_delta": int(rope_delta.reshape(-1)[0]),
            "greedy_tokens": new_tokens,
            "min_greedy_margin": round(min(margins), 6),
        })
        windows = ([x["windows"] for x in image_info] if windowed else None)
        print(f"{family} prompt {p}: {input_ids.shape[1]} tokens, grids "
              f"{[x['grid_thw'] for x in image_info]}, image tokens {counts}"
              + (f", windows {windows}" if windowed else "")
              + f", rope delta {prompts[-1]['rope_delta']}, greedy {new_tokens}, "
              f"min margin {min(margins):.3f}")
    save_file(tensors, str(gold / "goldens.safetensors"), metadata={"format": "pt"})
    manifest = {
        "generator": "tools/golden/make_qwen2vl_goldens.py",
        "family": family,
        "versions": {"transformers": transformers.__version__,
                     "torch": torch.__version__.split("+")[0]},
        "model_safetensors_sha256":
            hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
        "special_tokens": {t: tok.convert_tokens_to_ids(t) for t in SPECIALS},
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "prompts": prompts,
    }
    (gold / "goldens.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def make_fixture(family, out, tokenizer_json):
    spec = FAMILIES[family]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = load_tokenizer(tokenizer_json)

    torch.manual_seed(spec["seed"])
    model = spec["model"](tiny_config(family, tok)).to(torch.float32).eval()
    init_weights(model, spec["seed"])
    model.generation_config.bos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"),
                                            tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(out, safe_serialization=True)
    model = spec["model"].from_pretrained(out, torch_dtype=torch.float32,
                                          attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    assert model.visual.config._attn_implementation == "eager"
    processor = make_processor(family, tok)
    processor.save_pretrained(out)

    gold = out / "goldens"
    gold.mkdir()
    for name, w, h, seed in IMAGES:
        Image.fromarray(procedural_image(w, h, seed), "RGB").save(gold / name, optimize=False)
    write_goldens(family, out, model, processor)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["qwen2vl", "qwen25vl", "all"], default="all")
    ap.add_argument("--out-root", type=Path, default=root / "tests/data",
                    help="directory the fixture directories are written into")
    ap.add_argument("--tokenizer-json", type=Path, default=root / "tests/data/hf_bpe/tokenizer.json")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    for family in families:
        make_fixture(family, args.out_root / FAMILIES[family]["dir"], args.tokenizer_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
