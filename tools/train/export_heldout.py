#!/usr/bin/env python3
"""Writes held-out questions of the VQA set (vqa_data.py) for Mosaic's
quality bench (bench/quality_bench.cpp --vqa DIR): DIR/heldout.jsonl, one
question a line ({"user": text with <image> markers, "images": [png files],
"answer": word, "kind": question kind}), and the images as PNGs. Nothing
but numpy and Pillow is needed; the same --seed as train.py gives the
questions train.py reports its held-out accuracy on (the first --count).

Usage: tools/train/.venv/bin/python tools/train/export_heldout.py \
           [--out tests/data/vqa_heldout] [--count 300] [--seed 20261129] \
           [--model tests/data/hf_trained_llava]
(--model: draw the images at the size that checkpoint was trained on)
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vqa_data  # noqa: E402

DEFAULT_SEED = 20261129  # train.py's default


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE.parents[1] / "tests/data/vqa_heldout")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--model", type=Path, default=HERE.parents[1] / "tests/data/hf_trained_llava")
    args = ap.parse_args()
    vision = json.loads((args.model / "config.json").read_text())["vision_config"]
    vqa_data.set_image_size(vision["image_size"])
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    lines = []
    for i, s in enumerate(vqa_data.samples(args.seed, "heldout", 0, args.count)):
        files = []
        for j, spec in enumerate(s.images):
            name = f"q{i:04d}_{j}.png"
            vqa_data.render(spec).save(args.out / name, optimize=True)
            files.append(name)
        lines.append(json.dumps({"user": s.user, "images": files, "answer": s.answer,
                                 "kind": s.kind}, ensure_ascii=False))
    (args.out / "heldout.jsonl").write_text("\n".join(lines) + "\n")
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.count} questions to {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
