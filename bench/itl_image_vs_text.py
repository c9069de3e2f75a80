#!/usr/bin/env python3
"""Inter-token latency of image requests vs text requests on a running
OpenAI-compatible server (issue #19's stall: a new image's store-after-use
compile used to hold the device for a whole compile right after the first
tokens, stalling its own stream).

Each round sends one streamed chat request with a new 336x336 image and one
text-only request, one at a time (greedy, `ignore_eos`, 40 tokens), and the
gaps between content deltas are pooled per kind.

    python bench/itl_image_vs_text.py --base-url http://127.0.0.1:8000/v1 [--rounds 6]

Needs the `openai` package (bench/vllm_side_by_side.sh's venv has it).
"""
import argparse
import base64
import sys
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
import side_by_side  # noqa: E402  (make_png: deterministic PNGs)


def stream_gaps(client, model, with_image, seed, max_tokens):
    content = [{"type": "text", "text": "Describe this picture in detail please."}]
    if with_image:
        url = "data:image/png;base64," + base64.b64encode(side_by_side.make_png(seed)).decode()
        content.insert(0, {"type": "image_url", "image_url": {"url": url}})
    last, gaps = None, []
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
            temperature=0, stream=True, extra_body={"ignore_eos": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            if last is not None:
                gaps.append((now - last) * 1e3)
            last = now
    return gaps


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1000)
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key="x", max_retries=0)
    model = client.models.list().data[0].id
    gaps = {"image": [], "text": []}
    for r in range(a.rounds):
        gaps["image"] += stream_gaps(client, model, True, a.seed + r, a.max_tokens)
        gaps["text"] += stream_gaps(client, model, False, a.seed + r, a.max_tokens)
    p99 = {}
    for kind, g in gaps.items():
        g.sort()
        p99[kind] = percentile(g, 0.99)
        print(f"{kind:5s} inter-token latency p50 {percentile(g, 0.5):6.1f} ms  "
              f"p99 {p99[kind]:6.1f} ms  max {g[-1]:6.1f} ms  ({len(g)} gaps)")
    print(f"image / text p99 = {p99['image'] / p99['text']:.2f}")


if __name__ == "__main__":
    main()
