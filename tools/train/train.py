#!/usr/bin/env python3
"""Trains a small LlavaForConditionalGeneration (CLIP vision tower + GELU
projector + Llama decoder with GQA) from scratch on the procedural
multi-image VQA set in vqa_data.py, on the CPU, and saves it as an HF
checkpoint that Mosaic loads (tests/data/hf_trained_llava/ by default).

Usage (from the repository root):
  tools/train/setup
  tools/train/.venv/bin/python tools/train/train.py            # or tools/golden/.venv
  tools/train/.venv/bin/python tools/train/train.py --steps 50  # a smoke run

Deterministic: seeded data, seeded init, torch.use_deterministic_algorithms
and a fixed thread count (--threads) give the same weights from run to run
on the same machine type; --max-minutes stops early (then the result
depends on the machine's speed, and the log says so).

The tokenizer is the SentencePiece model of Mosaic's built-in tiny model
with Llama's add_dummy_prefix (tools/golden/make_goldens.py explains why),
so Mosaic's C++ tokenizer splits every prompt as HF does.

Outputs in --out: config.json, generation_config.json, model.safetensors
(f16), the LlavaProcessor files (tokenizer.model, tokenizer_config.json,
preprocessor_config.json, ...), train_log.json (settings, loss curve,
held-out accuracy per question kind, wall time). tools/train/export_heldout.py
writes the held-out questions and images for Mosaic's quality bench, and
tools/golden/make_goldens.py --trained writes HF's reference outputs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tools/golden"))

import vqa_data  # noqa: E402
from make_goldens import (  # noqa: E402
    builtin_tokenizer_model, clip_processor, load_llama_tokenizer, with_llama_dummy_prefix)
from transformers import (  # noqa: E402
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

PATCH = 16
N_PATCHES = (vqa_data.IMAGE_SIZE // PATCH) ** 2


def set_geometry(image_size: int, patch: int) -> None:
    """Images of image_size px cut into patch px patches: N_PATCHES image
    tokens each (16 at 64/16, the first checkpoint; 144 at 96/8)."""
    global PATCH, N_PATCHES
    if patch <= 0 or image_size % patch:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
    vqa_data.set_image_size(image_size)
    PATCH = patch
    N_PATCHES = (image_size // patch) ** 2


def set_geometry_of(model_dir: Path) -> None:
    """The geometry a checkpoint was trained on (its vision_config)."""
    vc = json.loads((model_dir / "config.json").read_text())["vision_config"]
    set_geometry(vc["image_size"], vc["patch_size"])


def resized_model(old_dir: Path) -> "LlavaForConditionalGeneration":
    """A warm start at the current (larger) geometry from a checkpoint
    trained at another: every weight is copied but the vision tower's patch
    embedding (its kernel resampled to the new patch size, scaled so a patch
    of the same colour gives the same response) and its position embedding
    (the patch grid interpolated bicubically, as ViTs are fine-tuned at a
    new resolution; the class position kept). The decoder, projector and
    vision layers start from what the old checkpoint learned."""
    old = LlavaForConditionalGeneration.from_pretrained(old_dir, torch_dtype=torch.float32)
    cfg = LlavaConfig.from_dict(old.config.to_dict())
    cfg.vision_config.image_size = vqa_data.IMAGE_SIZE
    cfg.vision_config.patch_size = PATCH
    cfg.image_seq_length = N_PATCHES
    # 3 images of N_PATCHES tokens plus the question must fit.
    cfg.text_config.max_position_embeddings = max(
        cfg.text_config.max_position_embeddings, 1 << (3 * N_PATCHES + 128).bit_length())
    model = LlavaForConditionalGeneration(cfg).to(torch.float32)
    state = old.state_dict()
    emb = "vision_tower.vision_model.embeddings."
    w = state[emb + "patch_embedding.weight"]
    old_patch = w.shape[-1]
    state[emb + "patch_embedding.weight"] = torch.nn.functional.interpolate(
        w, size=(PATCH, PATCH), mode="bilinear", antialias=True,
        align_corners=False) * (old_patch / PATCH) ** 2
    pos = state[emb + "position_embedding.weight"]
    side = int(round((pos.shape[0] - 1) ** 0.5))
    new_side = vqa_data.IMAGE_SIZE // PATCH
    grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(new_side, new_side), mode="bicubic",
                                           align_corners=False)
    state[emb + "position_embedding.weight"] = torch.cat(
        [pos[:1], grid.permute(0, 2, 3, 1).reshape(new_side * new_side, -1)])
    state.pop(emb + "position_ids", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model
# CLIPImageProcessor's defaults (OpenAI CLIP), as clip_processor writes them.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def model_config(args, sp_vocab: int) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=args.vision_hidden,
        intermediate_size=4 * args.vision_hidden,
        num_hidden_layers=args.vision_layers + 1,  # feature layer -2: the last is unused
        num_attention_heads=args.vision_hidden // 32,
        num_channels=3,
        image_size=vqa_data.IMAGE_SIZE,
        patch_size=PATCH,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=args.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=sp_vocab + 1,  # + <image>
        hidden_size=args.text_hidden,
        intermediate_size=args.text_hidden * 8 // 3 // 32 * 32,
        num_hidden_layers=args.text_layers,
        num_attention_heads=args.text_hidden // 32,
        num_key_value_heads=max(1, args.text_hidden // 64),  # GQA: 2 queries per KV head
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


def make_tokenizer(path: Path, tokenizer_model: Path | None, mosaic: str):
    """Writes tokenizer.model in place (see make_goldens.py for why) and
    returns HF's LlamaTokenizer on it."""
    if tokenizer_model:
        shutil.copyfile(tokenizer_model, path)
    else:
        builtin_tokenizer_model(mosaic, path)
    with_llama_dummy_prefix(path)
    return load_llama_tokenizer(path)


def pixel_values(images) -> np.ndarray:
    """What CLIPImageProcessor gives for IMAGE_SIZE-square RGB images (the
    resize and crop are identities): (x / 255 - mean) / std, CHW. Checked
    against the processor at start-up."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    arr = (arr * np.float32(1 / 255) - CLIP_MEAN) / CLIP_STD
    return arr.transpose(0, 3, 1, 2).copy()


class Encoder:
    """Token ids of a sample: the prompt with each <image> expanded to
    N_PATCHES slots (as LlavaProcessor does), then the answer and EOS."""

    def __init__(self, tok):
        self.tok = tok
        self.image_id = tok.convert_tokens_to_ids("<image>")
        self.eos = tok.eos_token_id

    def expand(self, ids):
        out = []
        for t in ids:
            out.extend([t] * N_PATCHES if t == self.image_id else [t])
        return out

    def prompt_ids(self, s: vqa_data.Sample):
        return self.expand(self.tok(s.prompt())["input_ids"])

    def sample_ids(self, s: vqa_data.Sample):
        prompt = self.tok(s.prompt())["input_ids"]
        full = self.tok(s.prompt() + " " + s.answer)["input_ids"]
        assert full[:len(prompt)] == prompt, (s.prompt(), s.answer)
        return self.expand(prompt), full[len(prompt):] + [self.eos]


def collate(enc: Encoder, batch):
    seqs, labels, pixels, attrs = [], [], [], []
    for s in batch:
        p, a = enc.sample_ids(s)
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
        pixels.extend(vqa_data.render(spec) for spec in s.images)
        attrs.extend(image_attributes(spec) for spec in s.images)
    width = max(len(x) for x in seqs)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    lab = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (x, y) in enumerate(zip(seqs, labels)):  # right padding
        ids[r, :len(x)] = torch.tensor(x)
        lab[r, :len(y)] = torch.tensor(y)
        mask[r, :len(x)] = 1
    return ids, mask, lab, torch.from_numpy(pixel_values(pixels)), torch.tensor(attrs)


# The auxiliary head's targets per image: colour, shape, count - 1, side
# (-100 where the copies straddle both halves).
AUX_CLASSES = [len(vqa_data.COLOURS), len(vqa_data.SHAPES), vqa_data.GRID, 2]
COLOUR_INDEX = {c: i for i, c in enumerate(vqa_data.COLOURS)}


def image_attributes(spec):
    cols = [c % vqa_data.GRID for c in spec.cells]
    half = vqa_data.GRID // 2
    side = 0 if max(cols) < half else 1 if min(cols) >= half else -100
    return [COLOUR_INDEX[spec.colour], vqa_data.SHAPES.index(spec.shape), spec.count - 1, side]


class AuxHead(torch.nn.Module):
    """Training-only linear probes on each image's mean projector output
    (not saved): they hand the vision tower a direct signal for what the
    questions ask, which the answer loss alone reaches only through the
    decoder's attention (a long plateau at the answer priors without it)."""

    def __init__(self, hidden):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in AUX_CLASSES)

    def forward(self, feats, attrs):
        pooled = feats.mean(dim=1)
        return sum(torch.nn.functional.cross_entropy(h(pooled), attrs[:, i], ignore_index=-100)
                   for i, h in enumerate(self.heads)) / len(self.heads)


class OrdinalHead(torch.nn.Module):
    """Training-only linear probe (not saved) on the decoder's hidden state
    of every image token after layer `layer`: which image of the prompt
    (first, second, third) the token belongs to. "Which image is blue?"
    needs the answer to read an image's place in the prompt off the tokens
    whose colour matches; the answer loss alone left that at chance, so
    this hands the decoder's early layers the first half of the task:
    each image token learns its ordinal from the context before it."""

    def __init__(self, hidden, layer):
        super().__init__()
        self.layer = layer
        self.head = torch.nn.Linear(hidden, vqa_data.MAX_IMAGES)

    def forward(self, hidden_states, ids, image_id):
        is_image = ids == image_id
        ordinal = (torch.cumsum(is_image.long(), dim=1) - 1) // N_PATCHES
        h = hidden_states[self.layer][is_image]
        return torch.nn.functional.cross_entropy(self.head(h), ordinal[is_image])


def answer_loss(model, ids, mask, labels, pix, image_id, aux=None, attrs=None, aux_head_only=False,
                ordinal=None):
    """Cross-entropy of the answer tokens, as the model's own forward with
    `labels` computes it, but with the LM head applied only at the answer
    positions (the rest of the logits are never needed; a third of the
    step time at this size)."""
    emb = model.get_input_embeddings()(ids)
    feats = model.get_image_features(
        pixel_values=pix, vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy)
    slots = (ids == image_id).unsqueeze(-1).expand_as(emb)
    emb = emb.masked_scatter(slots, feats.reshape(-1, emb.shape[-1]).to(emb.dtype))
    out = model.language_model.model(inputs_embeds=emb, attention_mask=mask,
                                     output_hidden_states=ordinal is not None)
    hidden = out.last_hidden_state
    ordinal_loss = None
    if ordinal is not None:
        states = [h.detach() for h in out.hidden_states] if aux_head_only else out.hidden_states
        ordinal_loss = ordinal(states, ids, image_id)
    target = labels[:, 1:]
    keep = target != -100
    logits = model.language_model.lm_head(hidden[:, :-1][keep])
    per_token = torch.nn.functional.cross_entropy(logits, target[keep], reduction="none")
    loss = per_token.mean()
    if aux is None:
        return loss
    # Each sample's loss on its first answer token (the one that decides
    # the answer; the rest follow from it): per-kind progress in the log.
    rows = torch.nonzero(keep, as_tuple=True)[0]
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = rows[1:] != rows[:-1]
    pooled = feats.mean(dim=1).detach()
    return (loss, aux(feats.detach() if aux_head_only else feats, attrs), per_token[first].detach(),
            pooled, ordinal_loss)


@torch.no_grad()
def greedy_answers(model, enc: Encoder, batch, max_new: int = 8):
    """Greedy decoding of each sample's answer (batched, left padded,
    recomputing the whole prefix each step: the sequences are short)."""
    prompts = [enc.prompt_ids(s) for s in batch]
    pix = torch.from_numpy(pixel_values([vqa_data.render(i) for s in batch for i in s.images]))
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pix,
                         max_new_tokens=max_new, do_sample=False,
                         pad_token_id=0, eos_token_id=enc.eos)
    texts = []
    for r in range(len(batch)):
        new = out[r, width:].tolist()
        if enc.eos in new:
            new = new[:new.index(enc.eos)]
        texts.append(enc.tok.decode(new, skip_special_tokens=True).strip())
    return texts


def evaluate(model, enc: Encoder, seed: int, n: int, batch: int = 64):
    model.eval()
    per_kind: dict = {}
    correct = 0
    for start in range(0, n, batch):
        chunk = vqa_data.samples(seed, "heldout", start, min(batch, n - start))
        for s, got in zip(chunk, greedy_answers(model, enc, chunk)):
            ok = got == s.answer
            correct += ok
            k = per_kind.setdefault(s.kind, [0, 0])
            k[0] += ok
            k[1] += 1
    model.train()
    return correct / n, {k: round(v[0] / v[1], 4) for k, v in sorted(per_kind.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests/data/hf_trained_llava")
    ap.add_argument("--mosaic", default=str(ROOT / "build/cli/mosaic"),
                    help="the mosaic binary (writes the built-in tiny tokenizer)")
    ap.add_argument("--tokenizer-model", type=Path,
                    help="use this tokenizer.model instead of running mosaic")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a loaded 2-core machine 1 is 4x faster than 2")
    ap.add_argument("--vision-hidden", type=int, default=96)
    ap.add_argument("--vision-layers", type=int, default=3, help="layers up to the feature layer")
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-samples", type=int, default=128)
    ap.add_argument("--final-eval-samples", type=int, default=1000)
    ap.add_argument("--aux-weight", type=float, default=1.0,
                    help="weight of the training-only image-attribute probes (AuxHead)")
    ap.add_argument("--init-from", type=Path,
                    help="continue from this checkpoint (a previous train.py --out) instead of "
                         "a fresh initialisation; its train_log.json is kept in the new log")
    ap.add_argument("--image-size", type=int,
                    help="image side in px (default 64, or --init-from's); with --init-from "
                         "at another geometry, a warm start at the new one (resized_model)")
    ap.add_argument("--patch", type=int,
                    help="vision patch side in px (default 16, or --init-from's)")
    ap.add_argument("--start-sample", type=int, default=0,
                    help="index of the first training question (continue after a previous run's "
                         "steps * batch so that no question is seen twice)")
    ap.add_argument("--ground-weight", type=float, default=0.0,
                    help="weight of a loss that turns each colour word's input embedding to "
                         "the mean projector output of the images of that colour (grounds "
                         "the words 'which' questions name in the image features' space)")
    ap.add_argument("--check-fraction", type=float, default=0.0,
                    help="this fraction of each batch: training-only 'Is the second image "
                         "red?' questions (vqa_data.make_check_sample)")
    ap.add_argument("--kind-weights", default="",
                    help="oversample question kinds, e.g. which=4,side=2 (others weigh 1)")
    ap.add_argument("--ordinal-weight", type=float, default=0.0,
                    help="weight of a training-only probe that predicts, from each image "
                         "token's decoder hidden state after --ordinal-layer, which image of "
                         "the prompt it is in (OrdinalHead)")
    ap.add_argument("--ordinal-layer", type=int, default=2,
                    help="decoder layer whose output the ordinal probe reads (1 = after the first)")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop (and save) after this much training time; 0: no limit")
    args = ap.parse_args()
    weights = vqa_data.parse_kind_weights(args.kind_weights)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if args.init_from:
        set_geometry_of(args.init_from)
        init_geometry = (vqa_data.IMAGE_SIZE, PATCH)
    set_geometry(args.image_size or vqa_data.IMAGE_SIZE, args.patch or PATCH)
    resize = bool(args.init_from) and (vqa_data.IMAGE_SIZE, PATCH) != init_geometry
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    tok = make_tokenizer(out / "tokenizer.model", args.tokenizer_model, args.mosaic)
    enc = Encoder(tok)
    processor = clip_processor(tok, vqa_data.IMAGE_SIZE, PATCH)
    # Our pixel_values shortcut must equal the processor's.
    probe = [vqa_data.render(i) for s in vqa_data.samples(args.seed, "train", 0, 4)
             for i in s.images]
    ref = processor.image_processor(probe, return_tensors="np")["pixel_values"]
    assert np.abs(ref - pixel_values(probe)).max() < 1e-5, np.abs(ref - pixel_values(probe)).max()

    if resize:
        model = resized_model(args.init_from)
        cfg = model.config
        previous = json.loads((args.init_from / "train_log.json").read_text())
        print(f"warm start at {vqa_data.IMAGE_SIZE} px / {PATCH} px patches "
              f"({N_PATCHES} image tokens) from {args.init_from}", flush=True)
    elif args.init_from:
        model = LlavaForConditionalGeneration.from_pretrained(args.init_from,
                                                              torch_dtype=torch.float32)
        cfg = model.config
        previous = json.loads((args.init_from / "train_log.json").read_text())
    else:
        cfg = model_config(args, tok.sp_model.get_piece_size())
        model = LlavaForConditionalGeneration(cfg).to(torch.float32)
        previous = None
    model.config.text_config._attn_implementation = "sdpa"
    n_params = sum(p.numel() for p in model.parameters())
    # The vision tower's last layer and post_layernorm never run (feature layer -2).
    unused = sum(p.numel() for n, p in model.named_parameters()
                 if f"encoder.layers.{cfg.vision_config.num_hidden_layers - 1}." in n
                 or "post_layernorm" in n)
    print(f"parameters: {n_params:,} ({n_params - unused:,} used)", flush=True)

    aux = AuxHead(cfg.text_config.hidden_size)
    ordinal = OrdinalHead(cfg.text_config.hidden_size, args.ordinal_layer) if args.ordinal_weight else None
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    decay += list(aux.parameters())
    if ordinal is not None:
        decay += list(ordinal.parameters())
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    log = {"settings": settings, "previous_run": previous,
           "parameters": n_params, "parameters_used": n_params - unused,
           "torch": torch.__version__, "loss": [], "eval": []}
    colour_ids = torch.tensor([enc.tok.convert_tokens_to_ids("\u2581" + c) for c in vqa_data.COLOURS])
    assert (colour_ids > 0).all(), colour_ids  # one piece per colour word
    model.train()
    t0 = time.time()
    ema = None
    step = 0
    stopped_early = False
    cursor = args.start_sample
    kind_ema: dict = {}
    # The probes are not saved: a continued run first fits fresh ones to
    # the features it starts from, before they pull on those features.
    aux_head_steps = args.warmup if args.init_from and not resize else 0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch, cursor = vqa_data.weighted_samples(args.seed, "train", cursor, args.batch, weights,
                                                  args.check_fraction)
        ids, mask, labels, pix, attrs = collate(enc, batch)
        answer, aux_loss, decisive, pooled, ordinal_loss = answer_loss(
            model, ids, mask, labels, pix, enc.image_id, aux, attrs,
            aux_head_only=step < aux_head_steps, ordinal=ordinal)
        for smp, l in zip(batch, decisive.tolist()):
            kind_ema[smp.kind] = l if smp.kind not in kind_ema else 0.97 * kind_ema[smp.kind] + 0.03 * l
        loss = answer + args.aux_weight * aux_loss
        if ordinal_loss is not None:
            loss = loss + args.ordinal_weight * ordinal_loss
        if args.ground_weight:
            # Each colour word's input embedding turned towards the mean
            # projector output of this batch's images of that colour
            # (held fixed; direction only: the features' norm is ~100x a
            # word's, and the decoder's RMSNorm sees directions): the word
            # then looks like the images it names, so what matches colours
            # between images ("same") can match a word against an image.
            words = model.get_input_embeddings().weight[colour_ids]
            terms = []
            for c in range(len(colour_ids)):
                of_c = pooled[attrs[:, 0] == c]
                if len(of_c):
                    target = of_c.mean(dim=0)
                    terms.append(1 - torch.nn.functional.cosine_similarity(words[c], target, dim=0))
            ground = torch.stack(terms).mean()
            loss = loss + args.ground_weight * ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        probes = list(aux.parameters()) + (list(ordinal.parameters()) if ordinal is not None else [])
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + probes, 1.0)
        opt.step()
        ema = answer.item() if ema is None else 0.98 * ema + 0.02 * answer.item()
        if step % 25 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step} answer loss {answer.item():.4f} ema {ema:.4f} "
                  f"aux {aux_loss.item():.4f} "
                  f"{'ordinal ' + format(ordinal_loss.item(), '.3f') + ' ' if ordinal_loss is not None else ''}lr {lr_at(step):.2e} "
                  f"{el:.0f}s ({el / (step + 1):.2f}s/step)", flush=True)
            print(f"step {step} {'ground ' + format(ground.item(), '.3f') + ' ' if args.ground_weight else ''}"
                  "first answer token loss by kind: " +
                  " ".join(f"{k} {kind_ema[k]:.3f}" for k in vqa_data.KINDS + ["check"]
                           if k in kind_ema),
                  flush=True)
            log["loss"].append([step, round(ema, 5)])
        if args.eval_every and step > 0 and step % args.eval_every == 0:
            acc, kinds = evaluate(model, enc, args.seed, args.eval_samples)
            print(f"step {step} held-out accuracy {acc:.3f} {kinds}", flush=True)
            log["eval"].append({"step": step, "accuracy": acc, "per_kind": kinds})
        if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
            print(f"stopping at step {step}: --max-minutes {args.max_minutes} reached", flush=True)
            stopped_early = True
            break
    train_seconds = time.time() - t0

    model.eval()
    model = model.to(torch.float16)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # The shipped (f16) weights, evaluated in f32 as Mosaic and the goldens run them.
    model = LlavaForConditionalGeneration.from_pretrained(out, torch_dtype=torch.float32).eval()
    acc, kinds = evaluate(model, enc, args.seed, args.final_eval_samples)
    print(f"final held-out accuracy {acc:.4f} over {args.final_eval_samples} {kinds}")
    total_seconds = train_seconds + (
        previous.get("total_train_seconds", previous["train_seconds"]) if previous else 0.0)
    log.update({"steps_run": step + 1, "next_sample": cursor, "stopped_early": stopped_early,
                "train_seconds": round(train_seconds, 1),
                "total_train_seconds": round(total_seconds, 1),
                "final_heldout_accuracy": acc, "final_heldout_per_kind": kinds,
                "final_eval_samples": args.final_eval_samples})
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB), trained {train_seconds / 60:.1f} min; "
          f"a further run starts at --start-sample {cursor}")


if __name__ == "__main__":
    main()
