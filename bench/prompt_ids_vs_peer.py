#!/usr/bin/env python3
"""The same chat (text and three images of different sizes) to two
OpenAI-compatible servers with vLLM's `return_token_ids`, comparing the
prompt ids each built (vLLM renders chat prompts without BOS; Mosaic's
leading BOS is dropped before comparing). For LLaVA-1.6 and Qwen2-VL
exports, whose image slots depend on each image's size.

    bench/prompt_ids_vs_peer.py MODEL_DIR [PEER_URL] [MOSAIC_URL]

e.g. vLLM's CPU build (build/venv-vllm, see bench/vllm_side_by_side.sh) on
port 8100 and `mosaic serve` on 8200, both serving the directory that
`mosaic model init --preset small-next` (or small-qwen2vl) writes (vLLM's
CPU attention has no kernel for the tiny presets' head_dim 16).
"""
import base64, io, json, sys, urllib.request
import numpy as np
from PIL import Image

def png(w, h, seed):
    rs = np.random.RandomState(seed)
    buf = io.BytesIO()
    Image.fromarray(rs.randint(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

images = [png(96, 72, 1), png(60, 90, 2), png(200, 61, 3)]
messages = [{"role": "user", "content": [
    {"type": "text", "text": "Look at this first"},
    {"type": "image_url", "image_url": {"url": images[0]}},
    {"type": "text", "text": "\nand then at these:"},
    {"type": "image_url", "image_url": {"url": images[1]}},
    {"type": "image_url", "image_url": {"url": images[2]}},
    {"type": "text", "text": " Which is redder?"}]}]

def ask(base):
    model = json.load(urllib.request.urlopen(base + "/models"))["data"][0]["id"]
    body = {"model": model, "messages": messages, "max_tokens": 1, "temperature": 0,
            "return_token_ids": True}
    req = urllib.request.Request(base + "/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))

peer = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8100/v1"
mosaic = sys.argv[3] if len(sys.argv) > 3 else "http://127.0.0.1:8200/v1"
v = ask(peer)
m = ask(mosaic)
vi, mi = v.get("prompt_token_ids"), m.get("prompt_token_ids")
cfg = json.load(open(sys.argv[1] + "/config.json"))
image_id = cfg.get("image_token_index", cfg.get("image_token_id"))  # LLaVA / Qwen2-VL
print("vLLM  ", len(vi or []), "ids,", (vi or []).count(image_id), "image slots; usage", v["usage"])
print("Mosaic", len(mi or []), "ids,", (mi or []).count(image_id), "image slots; usage", m["usage"])
if vi and mi and mi[0] == 1 and vi[0] != 1:
    mi = mi[1:]  # vLLM renders chat prompts without BOS (docs/sim.md)
print("identical:", vi == mi)
ok = vi == mi
if vi != mi and vi and mi:
    i = next((i for i, (a, b) in enumerate(zip(vi, mi)) if a != b), min(len(vi), len(mi)))
    print("first difference at", i, "vLLM", vi[max(0, i-5):i+5], "Mosaic", mi[max(0, i-5):i+5])
sys.exit(0 if ok else 1)
