"""Mosaic's HF export against transformers 5 and against `mosaic serve`.

Run by hf_export_test.sh, which exports builtin:tiny (LLaVA-1.5),
builtin:tiny-next (LLaVA-1.6: anyres, a Mistral decoder; run by
LlavaNextForConditionalGeneration, each image's <image> count by its size)
and builtin:tiny-qwen2vl / tiny-qwen25vl (Qwen2-VL / Qwen2.5-VL: dynamic
resolution, M-RoPE, Qwen's tokenizer and chat template; run by
Qwen2[_5]VLForConditionalGeneration) with `mosaic model init`,
serves that directory with `mosaic serve --model DIR` and passes
MOSAIC_MODEL_DIR, MOSAIC_BASE_URL and MOSAIC_API_KEY. Checks:

  * the export has the files transformers 5 reads (tokenizer.json,
    chat_template.json, processor_config.json) and AutoProcessor picks them
    up: a `tokenizers`-backed tokenizer, the export's chat template, and
    num_additional_image_tokens == 1, so each image gets the vision tower's
    patch count of <image> slots;
  * one chat with text and images in mixed order (a system message, a user
    message [text, PNG, text, JPEG, text], an assistant answer, a user
    message [PNG, text]) rendered and tokenised by AutoProcessor and run by
    LlavaForConditionalGeneration (float32, last position, log_softmax in
    float64), and sent to POST /v1/chat/completions with max_tokens 1,
    temperature 0, logprobs, top_logprobs 20 and return_token_ids:
      - prompt_token_ids == HF input_ids, exactly;
      - usage.prompt_tokens == len(prompt_token_ids);
      - the generated token == HF's argmax;
      - every top-20 entry's logprob within 1e-4 of HF's, and Mosaic's top-20
        ids the same set as HF's (ties at the boundary within 1e-4 allowed).

The request asks for the `full` policy and no compression, so Mosaic computes
every token at every layer, as HF does. JPEG: Mosaic decodes with
libjpeg-turbo (accurate integer IDCT, fancy upsampling), the decoder Pillow
wraps with the same defaults, so HF is given Pillow's decoding of the very
bytes Mosaic receives. Resize: Mosaic reproduces Pillow's antialiased bicubic
(engine/model/image_preprocess.cpp), i.e. transformers' PIL backend
(CLIPImageProcessorPil), which the processor is asked for explicitly: with
torchvision installed transformers 5 defaults to its torchvision backend,
whose resize differs by up to one 8-bit level in some pixels (up to ~1e-3 in
this model's logprobs).
"""
import base64
import io
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import (AutoProcessor, LlavaForConditionalGeneration,
                          LlavaNextForConditionalGeneration, Qwen2_5_VLForConditionalGeneration,
                          Qwen2VLForConditionalGeneration)

MODEL_CLASSES = {"llava": LlavaForConditionalGeneration,
                 "llava_next": LlavaNextForConditionalGeneration,
                 "qwen2_vl": Qwen2VLForConditionalGeneration,
                 "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}

TOL = 1e-4
TOP = 20

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return ok


def fatal(what):
    print("FAIL:", what, flush=True)
    sys.exit(1)


# -- test images ----------------------------------------------------------------------

def make_images():
    """Three deterministic images of different sizes and formats, as
    (mime, encoded bytes): a 40x56 PNG, an 80x64 JPEG and a 72x48 PNG."""
    rs = np.random.RandomState(20240607)
    out = []

    noise = rs.randint(0, 256, size=(56, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buf, format="PNG")
    out.append(("image/png", buf.getvalue()))

    # A smooth gradient with some noise: closer to a photo than pure noise.
    y, x = np.mgrid[0:64, 0:80]
    grad = np.stack([x * 3, y * 4, (x + y) * 2], axis=-1).astype(np.int64)
    grad = np.clip(grad + rs.randint(-20, 21, size=grad.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grad, "RGB").save(buf, format="JPEG", quality=90)
    out.append(("image/jpeg", buf.getvalue()))

    blocks = rs.randint(0, 256, size=(6, 9, 3), dtype=np.uint8)
    big = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))  # 48 x 72
    buf = io.BytesIO()
    Image.fromarray(big, "RGB").save(buf, format="PNG")
    out.append(("image/png", buf.getvalue()))
    return out


def pil(encoded):
    img = Image.open(io.BytesIO(encoded))
    img.load()
    return img


def data_url(mime, encoded):
    return f"data:{mime};base64," + base64.b64encode(encoded).decode()


# -- the chat, in both formats ----------------------------------------------------------

SYSTEM = "You compare pictures."
# (kind, payload): text parts and indices into the image list, in order.
USER_1 = [("text", "Look at this first"), ("image", 0), ("text", "\nand then at this one:"),
          ("image", 1), ("text", " Which is redder?")]
ASSISTANT = "The second one."
USER_2 = [("image", 2), ("text", "And this one, 42 times?")]


def hf_messages(images):
    def parts(spec):
        return [{"type": "text", "text": v} if k == "text" else {"type": "image", "image": pil(images[v][1])}
                for k, v in spec]
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": parts(USER_1)},
        {"role": "assistant", "content": [{"type": "text", "text": ASSISTANT}]},
        {"role": "user", "content": parts(USER_2)},
    ]


def openai_messages(images):
    def parts(spec):
        return [{"type": "text", "text": v} if k == "text"
                else {"type": "image_url", "image_url": {"url": data_url(*images[v])}}
                for k, v in spec]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": parts(USER_1)},
        {"role": "assistant", "content": ASSISTANT},
        {"role": "user", "content": parts(USER_2)},
    ]


# -- the export as transformers 5 sees it ------------------------------------------------

class QwenSteps:
    """What Qwen2VLProcessor does for images, from the export's own parts:
    the tokenizer's chat template, the image processor (PIL backend), each
    <|image_pad|> repeated grid.prod() / merge**2 times, then the tokenizer."""

    def __init__(self, model_dir):
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(model_dir,
                                                                               backend="pil")
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, return_dict=False,
                            return_tensors=None):
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)
        if not tokenize:
            return text
        images = [part["image"] for m in messages if isinstance(m["content"], list)
                  for part in m["content"] if part["type"] == "image"]
        px = self.image_processor(images=images, return_tensors="pt")
        merge = self.image_processor.merge_size ** 2
        pieces = text.split("<|image_pad|>")
        assert len(pieces) == len(images) + 1, "one <|image_pad|> per image"
        expanded = pieces[0]
        for grid, rest in zip(px["image_grid_thw"], pieces[1:]):
            expanded += "<|image_pad|>" * int(grid.prod().item() // merge) + rest
        ids = self.tokenizer(expanded, return_tensors="pt")
        # transformers 5 computes M-RoPE from the tokens' types (1 = image).
        types = (ids["input_ids"] == self.image_token_id).long()
        return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
                "pixel_values": px["pixel_values"], "image_grid_thw": px["image_grid_thw"],
                "mm_token_type_ids": types}


def check_export_qwen(model_dir, processor, cfg):
    """Qwen2-VL / Qwen2.5-VL: Qwen's tokenizer, template and image processor."""
    d = Path(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.json",
                 "preprocessor_config.json", "config.json", "model.safetensors"):
        check((d / name).is_file(), f"export lacks {name}")
    tok = processor.tokenizer
    check(getattr(tok, "is_fast", False), f"tokenizer is not the tokenizers-backed one: {type(tok)}")
    image_id = cfg["image_token_id"]
    check(processor.image_token_id == image_id
          and tok.convert_tokens_to_ids("<|image_pad|>") == image_id,
          f"<|image_pad|> is not id {image_id} (image_token_id) in the processor/tokenizer")
    ip = processor.image_processor
    check(getattr(ip, "merge_size", 2) == cfg["vision_config"].get("spatial_merge_size", 2),
          "the image processor's merge_size differs from config.json's")
    return image_id, None  # slots by each image's size


def check_export(model_dir, processor):
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    if cfg["model_type"] in ("qwen2_vl", "qwen2_5_vl"):
        return check_export_qwen(model_dir, processor, cfg)
    for name in ("tokenizer.json", "chat_template.json", "processor_config.json",
                 "preprocessor_config.json", "config.json", "model.safetensors"):
        check((d / name).is_file(), f"export lacks {name}")
    tok = processor.tokenizer
    check(getattr(tok, "is_fast", False) and getattr(tok, "backend_tokenizer", None) is not None,
          f"tokenizer is not the tokenizers-backed one read from tokenizer.json: {type(tok)}")
    if (d / "chat_template.json").is_file():
        template = json.loads((d / "chat_template.json").read_text())["chat_template"]
        check(processor.chat_template == template,
              "processor's chat template is not chat_template.json's")
    check(getattr(processor.image_processor, "backend", None) == "pil",
          f"image processor {type(processor.image_processor).__name__} is not the PIL backend")
    check(getattr(processor, "num_additional_image_tokens", None) == 1,
          "processor.num_additional_image_tokens = "
          f"{getattr(processor, 'num_additional_image_tokens', None)!r}, expected 1")
    cfg = json.loads((d / "config.json").read_text())
    v = cfg["vision_config"]
    check(cfg.get("vision_feature_select_strategy") == "default"
          and processor.vision_feature_select_strategy == "default",
          "vision_feature_select_strategy is not 'default' in config.json and the processor")
    check(processor.patch_size == v["patch_size"],
          f"processor patch_size {processor.patch_size} != vision_config {v['patch_size']}")
    image_id = cfg["image_token_index"]
    check(processor.image_token_id == image_id and tok.convert_tokens_to_ids("<image>") == image_id,
          f"<image> is not id {image_id} (image_token_index) in the processor/tokenizer")
    # CLS + patches, CLS dropped by the default strategy; anyres: by the
    # image's size (None: the processor's own count is checked against
    # Mosaic's ids).
    if cfg["model_type"] == "llava_next":
        check(cfg.get("image_grid_pinpoints") == processor.image_processor.image_grid_pinpoints,
              "image_grid_pinpoints differ between config.json and the image processor")
        return image_id, None
    slots = (v["image_size"] // v["patch_size"]) ** 2
    return image_id, slots


# -- Mosaic ---------------------------------------------------------------------------------

def post(url, key, body):
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json",
                                  "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        fatal(f"POST {url}: HTTP {e.code}: {e.read().decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as e:
        fatal(f"POST {url}: {e}")


def get(url, key):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError) as e:
        fatal(f"GET {url}: {e}")


def entry_id(entry, where):
    """The token id of a logprobs entry: its `token_id` (Mosaic's extension),
    else a vLLM `token_id:N` token string."""
    if isinstance(entry.get("token_id"), int):
        return entry["token_id"]
    m = re.fullmatch(r"token_id:(\d+)", str(entry.get("token", "")))
    if m:
        return int(m.group(1))
    fatal(f"{where} carries no token id (no 'token_id' field): {entry}")


def window(ids, i, r=8):
    return f"[{max(0, i - r)}:{i + r + 1}] {ids[max(0, i - r):i + r + 1]}"


def main():
    model_dir = os.environ["MOSAIC_MODEL_DIR"]
    base = os.environ["MOSAIC_BASE_URL"]
    key = os.environ["MOSAIC_API_KEY"]
    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}", flush=True)

    # backend="pil": Mosaic's preprocessing is Pillow's resample (see the
    # module docstring); transformers 5 would pick the torchvision backend
    # wherever torchvision is installed.
    images = make_images()
    qwen = json.loads((Path(model_dir) / "config.json").read_text())["model_type"] in (
        "qwen2_vl", "qwen2_5_vl")
    if qwen:
        # transformers 5's Qwen2VLProcessor needs a video processor, which
        # needs torchvision: its three steps by hand instead.
        processor = QwenSteps(model_dir)
    else:
        processor = AutoProcessor.from_pretrained(model_dir, backend="pil")
    image_id, slots = check_export(model_dir, processor)

    # HF: processor-rendered and tokenised prompt, then the model's last logits.
    enc = processor.apply_chat_template(hf_messages(images), add_generation_prompt=True,
                                        tokenize=True, return_dict=True, return_tensors="pt")
    text = processor.apply_chat_template(hf_messages(images), add_generation_prompt=True,
                                         tokenize=False)
    hf_ids = enc["input_ids"][0].tolist()
    n_images = (enc["image_grid_thw"].shape[0] if "image_grid_thw" in enc
                else enc["pixel_values"].shape[0])  # Qwen: patch rows, one grid an image
    check(n_images == len(images), f"HF's inputs hold {n_images} images, expected {len(images)}")
    anyres = slots is None
    if anyres:
        slot_text = "slots by size"
    else:
        slot_text = f"{slots} slots"
        check(hf_ids.count(image_id) == len(images) * slots,
              f"HF input_ids hold {hf_ids.count(image_id)} <image> slots, "
              f"expected {len(images)} x {slots}")
    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    model = MODEL_CLASSES[model_type].from_pretrained(model_dir, dtype=torch.float32).eval()
    extra = {k: enc[k] for k in ("image_sizes", "image_grid_thw", "mm_token_type_ids") if k in enc}
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], pixel_values=enc["pixel_values"],
                    attention_mask=enc["attention_mask"], **extra)
    hf_lp = torch.log_softmax(out.logits[0, -1].to(torch.float64), dim=-1)
    hf_top = torch.topk(hf_lp, TOP)
    hf_top_ids = hf_top.indices.tolist()
    hf_argmax = hf_top_ids[0]
    boundary = hf_top.values[-1].item()

    # Mosaic: the same chat over the OpenAI API.
    served = get(base + "/models", key)["data"][0]["id"]
    resp = post(base + "/chat/completions", key, {
        "model": served,
        "messages": openai_messages(images),
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": TOP,
        "return_token_ids": True,
        "mosaic": {"policy": "full", "compression": "none"},
    })

    ids = resp.get("prompt_token_ids")
    if not isinstance(ids, list):
        fatal(f"response has no prompt_token_ids: {json.dumps(resp)[:2000]}")
    if ids != hf_ids:
        i = next((i for i, (a, b) in enumerate(zip(ids, hf_ids)) if a != b), min(len(ids), len(hf_ids)))
        check(False, f"prompt ids differ from HF's input_ids at index {i} "
                     f"(Mosaic {len(ids)} ids, HF {len(hf_ids)})\n"
                     f"  Mosaic {window(ids, i)}\n  HF     {window(hf_ids, i)}\n"
                     f"  HF's rendered text: {text!r}\n"
                     f"  HF's tokens there: {processor.tokenizer.convert_ids_to_tokens(hf_ids[max(0, i - 8):i + 9])}")
    usage = resp.get("usage") or {}
    check(usage.get("prompt_tokens") == len(ids),
          f"usage.prompt_tokens {usage.get('prompt_tokens')} != len(prompt_token_ids) {len(ids)}")

    choice = resp["choices"][0]
    gen = choice.get("token_ids")
    if not (isinstance(gen, list) and len(gen) == 1):
        fatal(f"choices[0].token_ids is not one id: {gen!r}")
    mosaic_tok = gen[0]
    if mosaic_tok != hf_argmax:
        tie = abs(hf_lp[mosaic_tok].item() - hf_lp[hf_argmax].item()) <= TOL
        check(tie, f"greedy token {mosaic_tok} (HF logprob {hf_lp[mosaic_tok].item():.6f}) != "
                   f"HF argmax {hf_argmax} ({hf_lp[hf_argmax].item():.6f})")

    content = (choice.get("logprobs") or {}).get("content") or []
    if len(content) != 1:
        fatal(f"choices[0].logprobs.content has {len(content)} entries, expected 1: "
              f"{json.dumps(choice.get('logprobs'))[:2000]}")
    first = content[0]
    top = first.get("top_logprobs") or []
    check(len(top) == TOP, f"{len(top)} top_logprobs, expected {TOP}")
    max_diff = 0.0
    m_ids = []
    for n, e in enumerate(top):
        t = entry_id(e, f"top_logprobs[{n}]")
        m_ids.append(t)
        if not (0 <= t < hf_lp.shape[0]):
            check(False, f"top_logprobs[{n}]: token id {t} outside the vocabulary")
            continue
        d = abs(e["logprob"] - hf_lp[t].item())
        max_diff = max(max_diff, d)
        check(d <= TOL, f"top_logprobs[{n}] token {t} {e.get('token')!r}: Mosaic {e['logprob']:.7f}, "
                        f"HF {hf_lp[t].item():.7f}, |diff| {d:.2e} > {TOL}")
    check(len(set(m_ids)) == len(m_ids), f"top_logprobs repeat a token id: {m_ids}")
    check(all(a["logprob"] >= b["logprob"] for a, b in zip(top, top[1:])),
          "top_logprobs are not in descending order")
    for t in set(m_ids) ^ set(hf_top_ids):
        if 0 <= t < hf_lp.shape[0]:
            check(abs(hf_lp[t].item() - boundary) <= TOL,
                  f"token {t} is in one top-{TOP} but not the other (HF logprob "
                  f"{hf_lp[t].item():.7f}, HF's {TOP}th {boundary:.7f})\n"
                  f"  Mosaic {m_ids}\n  HF     {hf_top_ids}")
    if first.get("token_id") is not None or re.fullmatch(r"token_id:\d+", str(first.get("token"))):
        check(entry_id(first, "content[0]") == mosaic_tok,
              f"content[0]'s token id {entry_id(first, 'content[0]')} != token_ids[0] {mosaic_tok}")
    chosen = [e for e, t in zip(top, m_ids) if t == mosaic_tok]
    check(bool(chosen) and abs(chosen[0]["logprob"] - first["logprob"]) <= 1e-9,
          "content[0].logprob is not its token's top_logprobs entry")

    if failures:
        print(f"hf_export_test: {len(failures)} check(s) failed")
        return 1
    print(f"hf_export_test passed: {len(ids)} prompt ids identical "
          f"({len(images)} images, {slot_text}, {hf_ids.count(image_id)} in all, mixed order), "
          f"greedy token {mosaic_tok}, "
          f"max |logprob diff| over top-{TOP} {max_diff:.2e} (tolerance {TOL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
