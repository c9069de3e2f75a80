#!/usr/bin/env python3
"""Regenerates tests/data/hf_tiny_llava/: a tiny random LLaVA checkpoint
saved by HF transformers, plus reference outputs computed by transformers
(PyTorch, CPU, float32) that tests/engine/hf_fidelity_test.cpp checks
Mosaic against. Deterministic: the same versions (tools/golden/setup) give
the same bytes.

Usage (from the repository root):
  tools/golden/setup
  tools/golden/.venv/bin/python tools/golden/make_goldens.py \
      --mosaic build-golden/cli/mosaic

The tokenizer is the SentencePiece model of Mosaic's built-in tiny model
(`mosaic model init --preset tiny`), so the fixture exercises the same
tokenizer Mosaic ships; pass --tokenizer-model to use a given file instead.

Outputs (all in the fixture directory):
  config.json, generation_config.json, model.safetensors   LlavaForConditionalGeneration.save_pretrained (f32)
  tokenizer.model, tokenizer_config.json, special_tokens_map.json,
  preprocessor_config.json, processor_config.json, chat_template.*
                                                           LlavaProcessor.save_pretrained
  goldens/image_*.png   procedural test images
  goldens/goldens.json          prompts, image files, token ids (before and after
                        <image> expansion), greedy continuations, tokenizer cases
  goldens/goldens.safetensors   per prompt p: p{p}.pixel_values [n_img, 3, S, S],
                        p{p}.vision_features [n_img, n_patches, vision_hidden]
                        (feature layer, class token dropped),
                        p{p}.image_embeddings [n_img, n_patches, hidden]
                        (projector output), p{p}.logits [vocab] (last position)
The goldens live in a subdirectory so that the checkpoint directory holds
only what a model loader expects (it reads every *.safetensors there).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import transformers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

SEED = 20261122
IMAGE_SIZE = 56
PATCH = 14
N_PATCHES = (IMAGE_SIZE // PATCH) ** 2
MAX_NEW_TOKENS = 8
# Each greedy step's top-1 must beat top-2 by this fraction of max |logit|,
# so that float rounding differences between engines cannot flip it.
MIN_GREEDY_MARGIN = 2e-3

# (file, width, height, seed): landscape downscale, portrait downscale,
# upscale, exact size.
IMAGES = [
    ("image_0.png", 96, 72, 11),
    ("image_1.png", 60, 90, 12),
    ("image_2.png", 40, 34, 13),
    ("image_3.png", 56, 56, 14),
]

# Images placed after some text, one or two per prompt (LLaVA-1.5 format).
PROMPTS = [
    ("USER: <image>\nWhat is shown in this picture? ASSISTANT:", ["image_0.png"]),
    ("USER: Describe the colours of this photo. <image>\nASSISTANT:", ["image_1.png"]),
    ("USER: Compare <image> with <image>. Which one is brighter? ASSISTANT:",
     ["image_2.png", "image_3.png"]),
    ("A chat between a user and an assistant. USER: Here is a picture <image> and "
     "another one <image>\nWhat changed between them? ASSISTANT:",
     ["image_3.png", "image_0.png"]),
]

# Plain text the tokenizers must split identically (no BOS).
TOKENIZER_CASES = [
    "Hello world",
    "What is shown in this picture?",
    "A red square on a blue background, next to 3 small circles.",
    "  two leading spaces and trailing  ",
    "line one\nline two\n\nline four",
    "numbers 1234567890 and 3.14159",
    "unicode: café, naïve, 東京, emoji 🙂",
    "tabs\tand\tsymbols #@$%^&*()[]{}<>",
    "ASSISTANT: It is a cat.",
]


def procedural_image(width, height, seed):
    """Smooth gradients, a few solid shapes and noise: enough structure that
    resizing and the vision tower see varied inputs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3), dtype=np.float64)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4), rng.uniform(0, 6.3)
        img[..., c] = 127.5 + 100.0 * np.sin(fx * x + fy * y + ph)
    for _ in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(4, max(6, min(width, height) / 3))
        color = rng.uniform(0, 255, size=3)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[mask] = color
    img += rng.normal(0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def tiny_llava_config(sp_vocab):
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,  # feature layer -2: Mosaic must stop after layer 2
        num_attention_heads=4,
        num_channels=3,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=sp_vocab + 1,  # + <image>
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA
        hidden_act="silu",
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=sp_vocab,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=N_PATCHES,
        tie_word_embeddings=False,
    )


def init_weights(model, seed):
    """Every parameter drawn from a seeded generator, in name order: norms
    1 + N(0, 0.1), biases N(0, 0.1), embeddings N(0, 1), everything else
    N(0, 0.15) -- large enough that logits are far from flat."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name or "layrnorm" in name:
                p.copy_(noise * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):
                p.copy_(noise * 0.1)
            elif "embed_tokens" in name or "class_embedding" in name or "position_embedding" in name:
                p.copy_(noise * (1.0 if "embed_tokens" in name else 0.5))
            else:
                p.copy_(noise * 0.15)


def builtin_tokenizer_model(mosaic, out_path):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([mosaic, "model", "init", "--preset", "tiny", "--out", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        shutil.copyfile(Path(tmp) / "tokenizer.model", out_path)


def with_llama_dummy_prefix(path):
    """Sets normalizer_spec.add_dummy_prefix as Llama's (and so every
    llava-hf checkpoint's) tokenizer.model has it. HF's LlamaTokenizer with
    legacy=false prepends "▁" to the text whatever the flag says,
    while SentencePiece itself (and so Mosaic) follows the flag; the
    built-in model is trained with the flag off, which makes the two
    disagree on the first word of every prompt (reported; see README.md)."""
    from sentencepiece import sentencepiece_model_pb2 as pb2
    model = pb2.ModelProto.FromString(path.read_bytes())
    model.normalizer_spec.add_dummy_prefix = True
    path.write_bytes(model.SerializeToString())


def load_llama_tokenizer(sp_path):
    """HF's LlamaTokenizer on `sp_path` as every llava-hf checkpoint
    configures it, with "<image>" added right after the SentencePiece
    pieces."""
    tok = LlamaTokenizer(str(sp_path), legacy=False, add_bos_token=True, add_eos_token=False,
                         pad_token="<unk>", padding_side="left",
                         clean_up_tokenization_spaces=False)
    sp_vocab = tok.sp_model.get_piece_size()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token = tok.convert_tokens_to_ids("<image>")
    assert image_token == sp_vocab, (image_token, sp_vocab)
    return tok


def write_goldens(out, model, processor, prompts, image_seq_length, min_margin=MIN_GREEDY_MARGIN):
    """Runs `model` (f32, eager attention, loaded from `out`) on `prompts`
    [(text, [png file names in out/goldens])] and writes
    out/goldens/goldens.json and goldens.safetensors."""
    tok = processor.tokenizer
    cfg = model.config
    image_token = tok.convert_tokens_to_ids("<image>")
    gold = out / "goldens"
    tensors = {}
    manifest_prompts = []
    for p, (text, files) in enumerate(prompts):
        images = [Image.open(gold / f).convert("RGB") for f in files]
        ids_unexpanded = tok(text)["input_ids"]
        batch = processor(images=images, text=text, return_tensors="pt")
        input_ids = batch["input_ids"]
        pixel_values = batch["pixel_values"].to(torch.float32)
        assert int((input_ids == image_token).sum()) == image_seq_length * len(files), \
            "this transformers version does not expand <image> in the processor"
        with torch.no_grad():
            vt = model.vision_tower(pixel_values, output_hidden_states=True)
            features = vt.hidden_states[cfg.vision_feature_layer][:, 1:]
            embeddings = model.multi_modal_projector(features)
            logits = model(input_ids=input_ids, pixel_values=pixel_values,
                           attention_mask=batch["attention_mask"]).logits[0, -1]
            gen = model.generate(input_ids=input_ids, pixel_values=pixel_values,
                                 attention_mask=batch["attention_mask"],
                                 max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
        new_tokens = gen.sequences[0, input_ids.shape[1]:].tolist()
        assert new_tokens[0] == int(torch.argmax(logits))
        margins = []
        for scores in gen.scores:
            s = scores[0]
            top = torch.topk(s, 2).values
            margins.append(float((top[0] - top[1]) / s.abs().max()))
        assert min(margins) >= min_margin, \
            f"prompt {p}: a greedy step is a near tie ({min(margins):.2e}); change the seed"
        tensors[f"p{p}.pixel_values"] = pixel_values.contiguous()
        tensors[f"p{p}.vision_features"] = features.contiguous()
        tensors[f"p{p}.image_embeddings"] = embeddings.contiguous()
        tensors[f"p{p}.logits"] = logits.contiguous()
        manifest_prompts.append({
            "text": text,
            "images": files,
            "input_ids": ids_unexpanded,
            "expanded_input_ids": input_ids[0].tolist(),
            "greedy_tokens": new_tokens,
            "greedy_text": tok.decode(new_tokens, skip_special_tokens=True),
            "min_greedy_margin": round(min(margins), 6),
            "max_abs_logit": float(logits.abs().max()),
        })
        print(f"prompt {p}: {len(input_ids[0])} tokens, greedy {new_tokens} "
              f"({tok.decode(new_tokens, skip_special_tokens=True)!r}), "
              f"min margin {min(margins):.3f}")

    save_file(tensors, str(gold / "goldens.safetensors"), metadata={"format": "pt"})
    tokenizer_cases = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]}
                       for t in TOKENIZER_CASES]
    sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    manifest = {
        "generator": "tools/golden/make_goldens.py",
        "versions": {"transformers": transformers.__version__,
                     "torch": torch.__version__.split("+")[0],
                     "numpy": np.__version__, "pillow": Image.__version__},
        "model_safetensors_sha256": sha,
        "image_seq_length": image_seq_length,
        "max_new_tokens": MAX_NEW_TOKENS,
        "prompts": manifest_prompts,
        "tokenizer_cases": tokenizer_cases,
    }
    (gold / "goldens.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def clip_processor(tok, image_size, patch):
    image_proc = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_resize=True, resample=Image.BICUBIC, do_center_crop=True, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, do_convert_rgb=True)
    return LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=patch,
                          vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1)


def greedy_margin(model, processor, text, images):
    """The smallest top-1 to top-2 gap (over max |logit|) of the greedy steps."""
    batch = processor(images=images, text=text, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    return min(float((torch.topk(s[0], 2).values.diff().abs() / s[0].abs().max())[0])
               for s in gen.scores)


def trained_goldens(out):
    """Goldens for a checkpoint that tools/train/train.py wrote in `out`:
    held-out VQA questions of tools/train/vqa_data.py with 1-3 images."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    import vqa_data
    tok = load_llama_tokenizer(out / "tokenizer.model")
    model = LlavaForConditionalGeneration.from_pretrained(
        out, torch_dtype=torch.float32, attn_implementation="eager").eval()
    vc = model.config.vision_config
    vqa_data.set_image_size(vc.image_size)
    processor = clip_processor(tok, vc.image_size, vc.patch_size)
    # The checkpoint's own preprocessor_config.json must be what we rebuild.
    saved = CLIPImageProcessor.from_pretrained(out)
    assert (saved.image_mean, saved.image_std, saved.crop_size, saved.size) == (
        processor.image_processor.image_mean, processor.image_processor.image_std,
        processor.image_processor.crop_size, processor.image_processor.size)
    gold = out / "goldens"
    if gold.exists():
        shutil.rmtree(gold)
    gold.mkdir()
    prompts = []
    for i, candidates in enumerate(vqa_data.golden_candidates()):
        for tries, s in enumerate(candidates):
            assert tries < 50, "no candidate without near ties"
            images = [vqa_data.render(spec) for spec in s.images]
            if greedy_margin(model, processor, s.prompt(), images) >= 2 * MIN_GREEDY_MARGIN:
                break
        files = []
        for j, image in enumerate(images):
            files.append(f"p{i}_image_{j}.png")
            image.save(gold / files[-1], optimize=False)
        prompts.append((s.prompt(), files))
    n_patches = (vc.image_size // vc.patch_size) ** 2
    write_goldens(out, model, processor, prompts, n_patches)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parents[2]
    ap.add_argument("--out", type=Path, default=root / "tests/data/hf_tiny_llava")
    ap.add_argument("--mosaic", default=str(root / "build-golden/cli/mosaic"),
                    help="the mosaic binary (writes the built-in tiny tokenizer)")
    ap.add_argument("--tokenizer-model", type=Path, help="use this tokenizer.model instead")
    ap.add_argument("--trained", type=Path,
                    help="write goldens for this trained checkpoint (tools/train/train.py) "
                         "instead of making the random one")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.trained:
        trained_goldens(args.trained)
        print(f"wrote {args.trained / 'goldens'}")
        return 0
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # -- tokenizer ----------------------------------------------------------
    # Written in place: LlamaTokenizer(legacy=False) would otherwise save
    # its own copy of the proto with add_dummy_prefix forced off.
    sp_path = out / "tokenizer.model"
    if args.tokenizer_model:
        shutil.copyfile(args.tokenizer_model, sp_path)
    else:
        builtin_tokenizer_model(args.mosaic, sp_path)
    with_llama_dummy_prefix(sp_path)
    tok = load_llama_tokenizer(sp_path)
    sp_vocab = tok.sp_model.get_piece_size()

    # -- model --------------------------------------------------------------
    torch.manual_seed(SEED)
    cfg = tiny_llava_config(sp_vocab)
    model = LlavaForConditionalGeneration(cfg).to(torch.float32).eval()
    init_weights(model, SEED)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out, safe_serialization=True)
    # Reload, so that the goldens come from exactly what the fixture holds.
    model = LlavaForConditionalGeneration.from_pretrained(
        out, torch_dtype=torch.float32, attn_implementation="eager").eval()
    processor = clip_processor(tok, IMAGE_SIZE, PATCH)
    processor.save_pretrained(out)

    # -- images -------------------------------------------------------------
    gold = out / "goldens"
    gold.mkdir()
    for name, w, h, seed in IMAGES:
        Image.fromarray(procedural_image(w, h, seed), "RGB").save(gold / name, optimize=False)

    # -- goldens ------------------------------------------------------------
    write_goldens(out, model, processor, PROMPTS, N_PATCHES)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
