#!/usr/bin/env python3
"""Trains FastCache's learned KV compressor for a LLaVA model (arXiv 2503.08461).

For every decoder layer, four MLPs (image K, image V, text K, text V) learn to
merge groups of G consecutive tokens of their modality into one KV row:

    row = fc2 . gelu(fc1 . concat(x_1..x_G) + b1) + b2

so that attention over the merged KV gives what attention over the full KV
gives. Training signal (per layer, per KV head group): the attention output
of the prompt's last `--window` queries over the compressed KV vs over the
full KV (MSE), plus a small reconstruction term that keeps merged rows near
the mean of their group. Keys are merged after RoPE, exactly as Mosaic's
paged pool holds them; groups never cross a segment (image / text) boundary
and the last prompt token is never merged (engine/kv_learned_compressor.hpp).

Needs PyTorch, transformers and safetensors (tools/fastcache/requirements.txt)
and runs on a GPU or, slowly, on the CPU. Writes
`<model>/fastcache_compressor.safetensors`, which `mosaic serve` loads when a
request asks for `"compression": "learned"`.

    python tools/fastcache/train_compressor.py --model ~/.cache/mosaic/models/small \
        --images DIR_OF_JPEGS --image-group 4 --text-group 1 --steps 2000
"""

import argparse
import json
import math
import os
import random
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF LLaVA directory (mosaic model init writes one)")
    p.add_argument("--images", help="directory of calibration images (default: procedural noise)")
    p.add_argument("--prompts", help="text file, one calibration question per line")
    p.add_argument("--vqa", action="store_true",
                   help="calibrate on tools/train's procedural VQA training questions (1-3 "
                        "images each, the prompts the trained checkpoint answers) instead of "
                        "--images/--prompts")
    p.add_argument("--image-group", type=int, default=4, help="image tokens merged into one row")
    p.add_argument("--text-group", type=int, default=1, help="text tokens merged (1: kept)")
    p.add_argument("--hidden", type=int, default=0, help="MLP width (default: 2 x kv_dim)")
    p.add_argument("--window", type=int, default=8, help="queries whose attention is matched")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=4, help="prompts per step")
    p.add_argument("--samples", type=int, default=0,
                   help="calibration prompts (default: max(64, 16 x batch))")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--recon", type=float, default=0.05, help="weight of the reconstruction term")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output file (default: MODEL/fastcache_compressor.safetensors)")
    return p.parse_args()


def _cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


DEFAULT_QUESTIONS = [
    "What is in the image?",
    "Describe the picture in detail.",
    "How many objects can you see, and what colour are they?",
    "What is unusual about this image?",
    "Where might this photo have been taken?",
]


def calibration_samples(args, processor, n):
    """(images, prompt text) pairs in the LLaVA-1.5 template."""
    import numpy as np
    from PIL import Image

    rng = random.Random(args.seed)
    if args.vqa:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "train"))
        import vqa_data

        # The training split from a far offset: questions the checkpoint's
        # own training (tools/train/train.py) never drew.
        for s in vqa_data.samples(args.seed, "train", 10_000_000, n):
            yield [vqa_data.render(i) for i in s.images], s.prompt()
        return
    questions = DEFAULT_QUESTIONS
    if args.prompts:
        with open(args.prompts) as f:
            questions = [l.strip() for l in f if l.strip()]
    files = []
    if args.images:
        files = sorted(
            os.path.join(args.images, f)
            for f in os.listdir(args.images)
            if f.lower().endswith((".png", ".jpg", ".jpeg"))
        )
    for _ in range(n):
        if files:
            img = Image.open(rng.choice(files)).convert("RGB")
        else:
            arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, (336, 336, 3))
            img = Image.fromarray(arr.astype("uint8"))
        text = "USER: <image>\n" + rng.choice(questions) + " ASSISTANT:"
        yield img, text


class Merger:
    """The four MLPs of one layer."""

    def __init__(self, torch, kv_dim, hidden, groups, device):
        self.parts = {}
        for name, g in (("image_k", groups[0]), ("image_v", groups[0]),
                        ("text_k", groups[1]), ("text_v", groups[1])):
            if g == 1:
                continue
            self.parts[name] = torch.nn.Sequential(
                torch.nn.Linear(g * kv_dim, hidden), torch.nn.GELU(),
                torch.nn.Linear(hidden, kv_dim)).to(device)
            # Start at "mean of the group": fc2 . fc1 ~ averaging.
            with torch.no_grad():
                self.parts[name][2].bias.zero_()

    def parameters(self):
        for m in self.parts.values():
            yield from m.parameters()


def layout(segments, n, groups):
    """Rows as (first, length, modality) in token order; mirrors lay_out() in C++."""
    rows = []
    for kind, begin, end in segments:
        g = groups[0] if kind == "image" else groups[1]
        group_end = n - 1 if end == n else end
        full = max(0, group_end - begin) // g if g > 1 else 0
        for j in range(full):
            rows.append((begin + j * g, g, kind))
        for t in range(begin + full * g, end):
            rows.append((t, 1, kind))
    return rows


def row_plan(torch, rows, device):
    """How compress() builds the rows, in a few batched ops: groups of rows
    with the same (modality, length) as gather indices, and the order that
    puts the pieces back in token order."""
    buckets = {}
    for r, (first, length, kind) in enumerate(rows):
        buckets.setdefault((kind, length), []).append((r, first))
    pieces, order = [], []
    for (kind, length), items in buckets.items():
        firsts = torch.tensor([f for _, f in items], device=device)
        gather = firsts[:, None] + torch.arange(length, device=device)[None, :]
        pieces.append((kind if length > 1 else None, gather))
        order.extend(r for r, _ in items)
    inverse = torch.empty(len(rows), dtype=torch.long, device=device)
    inverse[torch.tensor(order, device=device)] = torch.arange(len(rows), device=device)
    return pieces, inverse


def compress(torch, merger, x, plan, part):
    """x: [heads_kv, n, head_dim] -> [heads_kv, rows, head_dim] for part 'k' or 'v'."""
    h, n, d = x.shape
    flat = x.permute(1, 0, 2).reshape(n, h * d)  # [n, kv_dim]
    pieces, inverse = plan
    out = []
    for kind, gather in pieces:
        group = flat[gather]  # [rows, length, kv_dim]
        if kind is None:
            out.append(group[:, 0])
        else:
            out.append(merger.parts[kind + "_" + part](group.reshape(group.shape[0], -1)))
    rows = torch.cat(out)[inverse]
    return rows.reshape(-1, h, d).permute(1, 0, 2)


def attend(torch, q, k, v, q_pos, k_pos_end):
    """q: [heads, w, d]; k, v: [kv_heads, m, d]; causal by prompt position."""
    rep = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(rep, 0)
    v = v.repeat_interleave(rep, 0)
    s = torch.einsum("hwd,hmd->hwm", q, k) / math.sqrt(q.shape[-1])
    mask = k_pos_end[None, None, :] > q_pos[None, :, None]  # key starts after the query
    s = s.masked_fill(mask, float("-inf"))
    return torch.einsum("hwm,hmd->hwd", s.softmax(-1), v)


def main():
    args = parse_args()
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoProcessor, LlavaForConditionalGeneration
    except ImportError as e:
        sys.exit(f"error: {e}; install tools/fastcache/requirements.txt (PyTorch, transformers, "
                 "safetensors) first")
    torch.manual_seed(args.seed)
    model = LlavaForConditionalGeneration.from_pretrained(args.model, torch_dtype=torch.float32)
    model.to(args.device).eval()
    model.requires_grad_(False)  # only the mergers learn
    processor = AutoProcessor.from_pretrained(args.model)
    cfg = model.config.text_config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_dim = cfg.num_key_value_heads * head_dim
    hidden = args.hidden or 2 * kv_dim
    groups = (args.image_group, args.text_group)
    if groups == (1, 1):
        sys.exit("error: --image-group and --text-group are both 1: nothing to learn")
    image_token = model.config.image_token_index
    mergers = [Merger(torch, kv_dim, hidden, groups, args.device) for _ in range(cfg.num_hidden_layers)]
    params = [p for m in mergers for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr)
    # The model is frozen, so everything but the mergers is computed once per
    # calibration sample: each layer's full K and V (after RoPE), the
    # window's rotated queries, the target attention output and the rows.
    prepared = []
    for img, text in calibration_samples(args, processor, args.samples or max(64, args.batch * 16)):
        inputs = processor(images=img, text=text, return_tensors="pt").to(args.device)
        with torch.no_grad():
            out = model(**inputs, use_cache=True, output_hidden_states=True)
        ids = inputs["input_ids"][0]
        n = ids.shape[0]
        is_img = (ids == image_token).tolist()
        segments, begin = [], 0
        for t in range(1, n + 1):
            if t == n or is_img[t] != is_img[begin]:
                segments.append(("image" if is_img[begin] else "text", begin, t))
                begin = t
        rows = layout(segments, n, groups)
        k_pos_end = torch.tensor([f + l - 1 for f, l, _ in rows], device=args.device)
        w = min(args.window, n)
        q_pos = torch.arange(n - w, n, device=args.device)
        layers = []
        with torch.no_grad():
            for l, layer in enumerate(model.language_model.model.layers):
                k_full, v_full = out.past_key_values[l]  # [1, kv_heads, n, d], K after RoPE
                k_full, v_full = k_full[0], v_full[0]
                attn = layer.self_attn
                h_in = layer.input_layernorm(out.hidden_states[l][0, n - w:])
                q = attn.q_proj(h_in).view(w, cfg.num_attention_heads, head_dim).transpose(0, 1)
                cos, sin = model.language_model.model.rotary_emb(q, q_pos[None])
                q = q * cos + torch.cat((-q[..., head_dim // 2:], q[..., :head_dim // 2]), -1) * sin
                target = attend(torch, q, k_full, v_full, q_pos, torch.arange(n, device=args.device))
                means = {part: torch.stack([full[:, f:f + ln].mean(1) for f, ln, _ in rows], 1)
                         for part, full in (("k", k_full), ("v", v_full))}
                layers.append((k_full, v_full, q, target, means))
        prepared.append((row_plan(torch, rows, args.device), k_pos_end, q_pos, layers))
    print(f"prepared {len(prepared)} calibration prompts", flush=True)

    for step in range(args.steps):
        batch = random.Random(args.seed + step).sample(prepared, args.batch)
        loss = torch.zeros((), device=args.device)
        for rows, k_pos_end, q_pos, layers in batch:
            for l, (k_full, v_full, q, target, means) in enumerate(layers):
                k_c = compress(torch, mergers[l], k_full, rows, "k")
                v_c = compress(torch, mergers[l], v_full, rows, "v")
                got = attend(torch, q, k_c, v_c, q_pos, k_pos_end)
                loss = loss + torch.nn.functional.mse_loss(got, target)
                for part, comp in (("k", k_c), ("v", v_c)):
                    loss = loss + args.recon * torch.nn.functional.mse_loss(comp, means[part])
        opt.zero_grad()
        (loss / len(batch)).backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item() / len(batch):.6f}", flush=True)

    tensors = {}
    for l, m in enumerate(mergers):
        for name, mlp in m.parts.items():
            base = f"layers.{l}.{name}."
            tensors[base + "fc1.weight"] = mlp[0].weight.detach().cpu().contiguous()
            tensors[base + "fc1.bias"] = mlp[0].bias.detach().cpu().contiguous()
            tensors[base + "fc2.weight"] = mlp[2].weight.detach().cpu().contiguous()
            tensors[base + "fc2.bias"] = mlp[2].bias.detach().cpu().contiguous()
    out_path = args.out or os.path.join(args.model, "fastcache_compressor.safetensors")
    meta = {"image_group": str(groups[0]), "text_group": str(groups[1]),
            "trained_by": "tools/fastcache/train_compressor.py",
            "args": json.dumps({k: v for k, v in vars(args).items() if k != "out"})}
    save_file(tensors, out_path, metadata=meta)
    size = os.path.getsize(out_path)
    print(f"wrote {out_path} ({size / 1e6:.1f} MB, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
