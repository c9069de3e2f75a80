#!/usr/bin/env python3
"""Side-by-side TTFT client: the same prompts against any OpenAI-compatible
server (vLLM, `mosaic serve`), one server per `run`, tables from `report`.

  side_by_side.py run --base-url http://127.0.0.1:8000/v1 --label vllm-prefix \
      --out OUT [--mosaic-policy mpic:32] [--workloads chat,positions]
      [--dialogues 4] [--turns 5] [--requests 12] [--max-tokens 8] [--seed 7]
  side_by_side.py report --out OUT [--baseline vllm-prefix]
  side_by_side.py tokcheck --base-url URL --model-dir DIR [--out OUT --label L]

Workloads (images are 336x336 PNGs drawn from --seed, sent as base64 data
URLs; temperature 0, streaming, TTFT = time to the first content delta):
  chat       D dialogues of T turns; each turn adds a user message with one
             new image and a question and resends the whole history (earlier
             user messages with their images and fixed assistant answers, so
             that every server sees byte-identical prompts).
  positions  a pool of 6 images; each request carries 3 of them in a new
             order behind new text, so images recur at new positions and no
             two requests share a prefix beyond the chat template's start.
  decode     decode speed (issue #22, item 4): for each batch B of
             --decode-batches, B streams at once, each a different text
             prompt of about --decode-context tokens, generating
             --decode-tokens tokens with ignore_eos (vLLM's extension, which
             Mosaic also takes): output tokens/s while all B streams decode
             (from the last stream's first token to the first stream's last
             token; the ratio column compares this one) and of the batch
             with its prefills (all tokens / the batch's wall time).

Requests are plain OpenAI requests plus one server-specific field:
`--mosaic-policy` adds Mosaic's `mosaic: {policy}`, `--vllm-bos` adds vLLM's
`add_special_tokens: true` (vLLM renders chat prompts without BOS, Mosaic
always starts with BOS; the template cannot add it as text: "<s>USER" would
lose the dummy-prefix space of "USER"). Each server rejects or ignores the
other's field, so each is sent only to its own server.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from openai import OpenAI
from PIL import Image

IMAGE_SIZE = 336
POOL_SIZE = 6
IMAGES_PER_REQUEST = 3

# Words that open each positions request, so that no two requests share a
# prefix past the template's "USER: ".
OPENERS = ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
           "Juliet", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo",
           "Sierra", "Tango", "Uniform", "Victor", "Whiskey", "Xray", "Yankee", "Zulu")


# -- images ------------------------------------------------------------------

def make_png(seed: int) -> bytes:
    """A deterministic 336x336 RGB PNG: smooth colour fields plus noise, so
    that each seed gives a visibly different picture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    img = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
        img[..., c] = 0.5 + 0.4 * np.sin(2 * np.pi * (fx * x + fy * y) + ph)
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def image_part(seed: int) -> dict:
    url = "data:image/png;base64," + base64.b64encode(make_png(seed)).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


# -- workloads: lists of requests, each a dict with messages and tags ---------

def chat_workload(dialogues: int, turns: int, seed: int) -> list[dict]:
    """Turn t of dialogue d (both from 1) resends turns 1..t-1 with fixed
    assistant answers; requests are ordered dialogue by dialogue."""
    reqs = []
    for d in range(1, dialogues + 1):
        history: list[dict] = []
        for t in range(1, turns + 1):
            img_seed = seed * 100003 + d * 101 + t
            user = {"role": "user",
                    "content": [image_part(img_seed),
                                text_part(f"Picture {t} of talk {d}: what changed since the "
                                          f"last one, and which colour dominates?")]}
            history.append(user)
            reqs.append({"messages": list(history), "tags": {"dialogue": d, "turn": t}})
            history.append({"role": "assistant",
                            "content": f"In picture {t} the colours shift; blue and green "
                                       f"dominate the upper half."})
    return reqs


def positions_workload(requests: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed + 17)
    pool = [seed * 100003 + 90001 + i for i in range(POOL_SIZE)]
    seen: set[int] = set()
    reqs = []
    for i in range(requests):
        pick = [int(k) for k in rng.permutation(POOL_SIZE)[:IMAGES_PER_REQUEST]]
        opener = OPENERS[i % len(OPENERS)] + (f" {i // len(OPENERS)}" if i >= len(OPENERS) else "")
        content = [text_part(f"{opener}: request {i} looks at {IMAGES_PER_REQUEST} pictures. "
                             f"First this one ")]
        for j, k in enumerate(pick):
            content.append(image_part(pool[k]))
            content.append(text_part(f" then, as picture {j + 2} of request {i}, " if
                                     j + 1 < len(pick) else " and now: which one is brightest?"))
        new = [k for k in pick if k not in seen]
        seen.update(pick)
        reqs.append({"messages": [{"role": "user", "content": content}],
                     "tags": {"request": i, "images": pick, "repeat": not new}})
    return reqs


WORDS = ("river stone lantern copper meadow signal harbor velvet canyon thistle orbit "
         "ember glacier willow compass marble falcon prairie quartz saddle tundra beacon "
         "cobalt drift fern granite hollow indigo jasper kettle lagoon mosaic nectar opal "
         "pepper quill raven summit timber umber valley wander yarrow zephyr").split()


def decode_prompt(stream: int, context: int) -> list[dict]:
    """A text prompt of about `context` tokens, different from its first
    word on for each stream (no shared prefix)."""
    rng = np.random.default_rng(1000 + stream)
    words = [OPENERS[stream % len(OPENERS)], str(stream)]
    # builtin:small's 4,000-piece vocabulary cuts these words into ~3.6 tokens
    words += [WORDS[int(i)] for i in rng.integers(0, len(WORDS), size=max(1, context * 5 // 18))]
    return [{"role": "user", "content": " ".join(words) + ". Continue the list."}]


# -- one streaming request ---------------------------------------------------

def stream_one(client: OpenAI, model: str, messages: list[dict], max_tokens: int,
               extra_body: dict | None) -> dict:
    start = time.perf_counter()
    ttft = None
    last = None
    times = []  # perf_counter() of each content delta
    text = []
    usage = None
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body=extra_body or None)
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta.content
            if delta and ttft is None:
                ttft = time.perf_counter() - start
            if delta:
                text.append(delta)
                times.append(time.perf_counter())
                last = times[-1] - start
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    total = time.perf_counter() - start
    return {"ttft_s": ttft if ttft is not None else total, "total_s": total,
            "last_token_s": last if last is not None else total, "token_times": times,
            "text": "".join(text),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None}


def run(args: argparse.Namespace) -> int:
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "none"),
                    timeout=args.timeout)
    model = args.model or client.models.list().data[0].id
    extra = {"mosaic": {"policy": args.mosaic_policy}} if args.mosaic_policy else {}
    if args.vllm_bos:
        extra["add_special_tokens"] = True
    # Warm-up: load and first-call costs out of the measurements.
    stream_one(client, model, [{"role": "user", "content": "Hello there."}], 2, extra)
    result = {"label": args.label, "base_url": args.base_url, "model": model,
              "mosaic_policy": args.mosaic_policy, "max_tokens": args.max_tokens,
              "seed": args.seed, "workloads": {}}
    for name in args.workloads.split(","):
        if name == "chat":
            reqs = chat_workload(args.dialogues, args.turns, args.seed)
        elif name == "positions":
            reqs = positions_workload(args.requests, args.seed)
        elif name == "decode":
            result["workloads"][name] = run_decode(client, model, args, extra)
            continue
        else:
            print(f"unknown workload {name!r}", file=sys.stderr)
            return 2
        rows = []
        for n, r in enumerate(reqs):
            out = stream_one(client, model, r["messages"], args.max_tokens, extra)
            out.update(r["tags"])
            rows.append(out)
            print(f"[{args.label}] {name} {n + 1}/{len(reqs)} {r['tags']} "
                  f"ttft {out['ttft_s'] * 1e3:.0f} ms, prompt {out['prompt_tokens']} tokens",
                  flush=True)
        result["workloads"][name] = rows
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.label}.json").write_text(json.dumps(result, indent=1))
    return 0


def run_decode(client: OpenAI, model: str, args: argparse.Namespace, extra: dict) -> list[dict]:
    body = dict(extra, ignore_eos=True)
    rows = []
    for batch in (int(b) for b in args.decode_batches.split(",")):
        prompts = [decode_prompt(i, args.decode_context) for i in range(batch)]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=batch) as pool:
            outs = list(pool.map(lambda m: stream_one(client, model, m, args.decode_tokens, body),
                                 prompts))
        wall = time.perf_counter() - start
        tokens = sum(o["completion_tokens"] or 0 for o in outs)
        # While every stream of the batch decodes (after the last first
        # token, before the first last token): the batch's decode speed
        # without prefills in between.
        t_a = max(o["token_times"][0] for o in outs if o["token_times"])
        t_b = min(o["token_times"][-1] for o in outs if o["token_times"])
        in_window = sum(t_a < t <= t_b for o in outs for t in o["token_times"])
        steady = in_window / (t_b - t_a) if t_b > t_a and in_window else float("nan")
        for o in outs:
            del o["token_times"]
        row = {"batch": batch, "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
               "stream_tokens_per_s": steady / batch,
               "steady_tokens_per_s": steady,
               "ttft_mean_s": statistics.fmean(o["ttft_s"] for o in outs),
               "prompt_tokens": [o["prompt_tokens"] for o in outs]}
        rows.append(row)
        print(f"[{args.label}] decode batch {batch}: {tokens} tokens in {wall:.2f} s = "
              f"{row['tokens_per_s']:.1f} tokens/s with the prefills; all {batch} decoding: "
              f"{steady:.1f} tokens/s ({row['stream_tokens_per_s']:.1f} per stream)", flush=True)
    return rows


# -- report ------------------------------------------------------------------

def stats(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    pct = lambda p: s[min(len(s) - 1, int(round(p * (len(s) - 1))))]
    return {"n": len(s), "mean": statistics.fmean(s), "p50": statistics.median(s),
            "p90": pct(0.9)}


def summarise(result: dict) -> dict:
    out = {}
    chat = result["workloads"].get("chat")
    if chat:
        turns = sorted({r["turn"] for r in chat})
        out["chat"] = {f"turn {t}": stats([r["ttft_s"] for r in chat if r["turn"] == t])
                       for t in turns}
        out["chat"]["turns 2+"] = stats([r["ttft_s"] for r in chat if r["turn"] >= 2])
    dec = result["workloads"].get("decode")
    if dec:
        out["decode"] = {r["batch"]: {"tokens_per_s": r["tokens_per_s"],
                                      "steady_tokens_per_s": r["steady_tokens_per_s"]}
                         for r in dec}
    pos = result["workloads"].get("positions")
    if pos:
        out["positions"] = {
            "all": stats([r["ttft_s"] for r in pos]),
            "first (new image)": stats([r["ttft_s"] for r in pos if not r["repeat"]]),
            "repeat (seen images)": stats([r["ttft_s"] for r in pos if r["repeat"]])}
        f, r = out["positions"]["first (new image)"], out["positions"]["repeat (seen images)"]
        if f.get("n") and r.get("n"):
            out["positions"]["repeat/first"] = r["mean"] / f["mean"]
    return out


def report(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    results = {}
    for p in sorted(out_dir.glob("*.json")):
        if p.name in ("summary.json", "tokcheck.json"):
            continue
        results[json.loads(p.read_text())["label"]] = json.loads(p.read_text())
    if not results:
        print(f"no results in {out_dir}", file=sys.stderr)
        return 1
    # vLLM configs first, then Mosaic's in file order.
    labels = sorted(results, key=lambda l: (not l.startswith("vllm"), l))
    summ = {l: summarise(results[l]) for l in labels}
    base = args.baseline if args.baseline in summ else None
    others = [l for l in labels if l != base and not l.startswith("vllm")]
    def table(title: str, first: str, rows: list, cell, ratio) -> None:
        """One line per row: a cell per label, then Mosaic / baseline."""
        width = max([30] + [len(l + "/" + base) + 2 for l in others] if base else [30])
        print(f"\n== {title} ==")
        print(f"{first:24}" + "".join(f"{l:>22}" for l in labels) +
              ("".join(f"{l + '/' + base:>{width}}" for l in others) if base else ""))
        for row in rows:
            line = f"{str(row):24}" + "".join(f"{cell(l, row):>22}" for l in labels)
            line += "".join(f"{ratio(l, row):>{width}}" for l in others) if base else ""
            print(line)

    for wl, metrics in (("chat", ("mean", "p50")), ("positions", ("mean", "p50", "p90"))):
        rows = sorted({k for l in labels for k in summ[l].get(wl, {}) if k != "repeat/first"},
                      key=lambda k: (not k.startswith("turn "), k))
        if not rows:
            continue

        def ttft(l, row, wl=wl, metrics=metrics):
            s = summ[l].get(wl, {}).get(row, {})
            return "/".join(f"{s[m] * 1e3:.0f}" for m in metrics) if s.get("n") else "-"

        def ttft_ratio(l, row, wl=wl):
            s, b = summ[l].get(wl, {}).get(row, {}), summ[base].get(wl, {}).get(row, {})
            return f"{s['mean'] / b['mean']:.2f}x" if s.get("n") and b.get("n") else "-"

        table(f"{wl}: TTFT ms ({'/'.join(metrics)})", "", rows, ttft, ttft_ratio)
        if wl == "positions":
            print(f"{'repeat/first (mean)':24}" + "".join(
                f"{summ[l].get(wl, {}).get('repeat/first', float('nan')):>22.2f}"
                for l in labels))
            # Issue #22's spread (p90/p50 of same-sized requests): a first
            # sighting encodes its new images, a repeat does not, so each
            # class is its own population; "all" mixes the two.
            def spread(l, row):
                s = summ[l].get("positions", {}).get(row, {})
                return f"{s['p90'] / s['p50']:.2f}" if s.get("n") and s["p50"] > 0 else "-"
            for row in rows:
                print(f"{'p90/p50 ' + row.split(' ')[0]:24}" +
                      "".join(f"{spread(l, row):>22}" for l in labels))
    batches = sorted({b for l in labels for b in summ[l].get("decode", {})})
    if batches:
        def rate(l, b):
            d = summ[l].get("decode", {}).get(b)
            return f"{d['steady_tokens_per_s']:.1f}/{d['tokens_per_s']:.1f}" if d else "-"

        def rate_ratio(l, b):
            d, e = summ[l].get("decode", {}).get(b), summ[base].get("decode", {}).get(b)
            return f"{d['steady_tokens_per_s'] / e['steady_tokens_per_s']:.2f}x" if d and e else "-"

        table("decode: output tokens/s while all B streams decode / of the batch with its "
              "prefills", "batch", batches, rate, rate_ratio)
    # Same prompts, same token counts: a cheap check that the servers
    # tokenise alike (vLLM and Mosaic both count every image slot).
    counts = {l: [r["prompt_tokens"] for wl in sorted(results[l]["workloads"])
                  for r in results[l]["workloads"][wl]] for l in labels}
    ref = counts[labels[0]]
    print("\nprompt_tokens per request:")
    for l in labels:
        same = "same as " + labels[0] if counts[l] == ref else "DIFFERS from " + labels[0]
        print(f"  {l:22} {same}  (first {counts[l][:6]})")
    # How vLLM ran: with or without the preloads its CPU guide asks for.
    for p in sorted(out_dir.glob("vllm-*-preload.txt")):
        print(f"{p.name[:-len('-preload.txt')]}: {p.read_text().strip() or 'LD_PRELOAD= (none)'}")
    if any(l.startswith("vllm") for l in labels) and not list(out_dir.glob("vllm-*-preload.txt")):
        print("vLLM's LD_PRELOAD: not recorded (a run before the script recorded it: none)")
    (out_dir / "summary.json").write_text(json.dumps(
        {"summary": summ, "prompt_tokens": counts}, indent=1))
    return 0


# -- token-id check ----------------------------------------------------------

def mosaic_reference_ids(model_dir: str, chat_text: str, image_token_id: int) -> list[int]:
    """What Mosaic's tokenizer::encode_prompt makes of a rendered prompt:
    BOS, SentencePiece ids of the text before the first <image> (with
    SentencePiece's dummy-prefix space), each <image> as one id, later text
    without the prefix space (encoded behind the unk piece, which is dropped)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(Path(model_dir) / "tokenizer.model"))
    ids = [sp.bos_id()]
    parts = chat_text.split("<image>")
    unk = sp.id_to_piece(sp.unk_id())
    for i, text in enumerate(parts):
        if text:
            if i == 0:
                ids += sp.encode(text)
            else:
                skip = len(sp.encode(unk))
                ids += sp.encode(unk + text)[skip:]
        if i + 1 < len(parts):
            ids.append(image_token_id)
    return ids


def mosaic_chat_text(messages: list[dict]) -> str:
    """server/request_convert.cpp + engine/generation.cpp's chat_prompt: the
    text with one <image> per image part, in part order."""
    text, first = "", True
    for m in messages:
        if m["role"] == "assistant":
            text += " ASSISTANT: "
        elif m["role"] == "user" and not first:
            text += " USER: "
        if m["role"] != "system":
            first = False
        content = m["content"]
        if isinstance(content, str):
            text += content
        else:
            for p in content:
                text += p["text"] if p["type"] == "text" else "<image>"
        if m["role"] == "system":
            text += "\n"
    return "USER: " + text + " ASSISTANT:"


def tokcheck(args: argparse.Namespace) -> int:
    """vLLM's /tokenize of a mixed text/image chat against Mosaic's ids."""
    import urllib.request
    cfg = json.loads((Path(args.model_dir) / "config.json").read_text())
    image_id = cfg["image_token_index"]
    messages = [
        {"role": "system", "content": "You compare pictures."},
        {"role": "user", "content": [text_part("Look at this first"), image_part(1),
                                     text_part("\nand then at this one:"), image_part(2),
                                     text_part(" Which is redder?")]},
        {"role": "assistant", "content": "The second one."},
        {"role": "user", "content": [image_part(3), text_part("And this one, 42 times?")]},
    ]
    root = args.base_url.rsplit("/v1", 1)[0]
    model = args.model or OpenAI(base_url=args.base_url, api_key="none").models.list().data[0].id
    body = json.dumps({"model": model, "messages": messages, "add_generation_prompt": True,
                       "add_special_tokens": True})
    req = urllib.request.Request(root + "/tokenize", body.encode(),
                                 {"Content-Type": "application/json"})
    vllm_ids = json.loads(urllib.request.urlopen(req, timeout=300).read())["tokens"]
    # /tokenize may or may not expand each image to its feature slots:
    # collapse runs of the image id to one per image before comparing.
    collapsed = [t for i, t in enumerate(vllm_ids)
                 if t != image_id or i == 0 or vllm_ids[i - 1] != image_id]
    ref = mosaic_reference_ids(args.model_dir, mosaic_chat_text(messages), image_id)
    ok = collapsed == ref
    print(f"vLLM /tokenize: {len(vllm_ids)} ids ({len(collapsed)} with one id per image)")
    print(f"Mosaic encode_prompt reference: {len(ref)} ids")
    print("token ids " + ("MATCH" if ok else "DIFFER"))
    if not ok:
        n = next((i for i, (a, b) in enumerate(zip(collapsed, ref)) if a != b),
                 min(len(collapsed), len(ref)))
        print(f"  first difference at {n}: vllm {collapsed[max(0, n - 3):n + 6]} "
              f"mosaic {ref[max(0, n - 3):n + 6]}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "tokcheck.json").write_text(json.dumps(
            {"vllm": vllm_ids, "mosaic_reference": ref, "match": ok}, indent=0))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--base-url", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--model", default="", help="default: the server's first /v1/models id")
    r.add_argument("--mosaic-policy", default="", help="sent as mosaic.policy (Mosaic only)")
    r.add_argument("--vllm-bos", action="store_true",
                   help="send add_special_tokens=true (vLLM only) so that vLLM prepends BOS "
                        "as Mosaic does: the exported chat template has no BOS")
    r.add_argument("--workloads", default="chat,positions")
    r.add_argument("--dialogues", type=int, default=4)
    r.add_argument("--turns", type=int, default=5)
    r.add_argument("--requests", type=int, default=12)
    r.add_argument("--max-tokens", type=int, default=8)
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--decode-batches", default="1,8,32")
    r.add_argument("--decode-context", type=int, default=512)
    r.add_argument("--decode-tokens", type=int, default=64)
    r.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--baseline", default="vllm-prefix")
    t = sub.add_parser("tokcheck")
    t.add_argument("--base-url", required=True)
    t.add_argument("--model-dir", required=True)
    t.add_argument("--model", default="")
    t.add_argument("--out", default="")
    args = ap.parse_args()
    return {"run": run, "report": report, "tokcheck": tokcheck}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
