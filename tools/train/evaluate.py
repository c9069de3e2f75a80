#!/usr/bin/env python3
"""Held-out accuracy of a checkpoint that train.py wrote, in HF transformers
(f32, greedy, up to 8 new tokens; the answer must equal the reference word):
the first --count held-out questions of vqa_data.py, overall and per kind.

Usage: tools/train/.venv/bin/python tools/train/evaluate.py \
           [--model tests/data/hf_trained_llava] [--count 1000] [--seed 20261129]
(the images are drawn at the size the checkpoint was trained on)
"""

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "golden"))
import train  # noqa: E402
from make_goldens import load_llama_tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=HERE.parents[1] / "tests/data/hf_trained_llava")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train.set_geometry_of(args.model)
    enc = train.Encoder(load_llama_tokenizer(args.model / "tokenizer.model"))
    model = train.LlavaForConditionalGeneration.from_pretrained(
        args.model, torch_dtype=torch.float32).eval()
    acc, kinds = train.evaluate(model, enc, args.seed, args.count)
    print(json.dumps({"heldout_accuracy": acc, "count": args.count, "per_kind": kinds}))


if __name__ == "__main__":
    main()
