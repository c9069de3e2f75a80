"""Byte-level BPE goldens in Qwen2's tokenizer layout, for
tests/engine/model/bpe_tokenizer_test.cpp.

Trains a small byte-level BPE with HF `tokenizers`, configured as Qwen2's
tokenizer.json is (NFC normaliser; Split on Qwen2's pre-tokenizer regex,
isolated; ByteLevel without its own regex; BPE without byte fallback;
ByteLevel decoder; Qwen2-VL's special tokens), on a varied corpus, and
writes the tokenizer.json and HF's ids for held-out text: English, code,
numbers, contractions in any case, whitespace runs, tabs and newlines,
accents (composed and decomposed), German, French, Russian, Greek, Chinese,
Japanese, Korean, Arabic, emoji, and chat markup with special tokens.

    tools/golden/.venv/bin/python tools/golden/make_bpe_goldens.py
"""

import argparse
import json
import random
import unicodedata
from pathlib import Path

from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        trainers)

# Qwen2's pre-tokenizer pattern (tokenizer.json of Qwen/Qwen2-VL-*).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

SNIPPETS = [
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see it; they've said we'd go. DON'T SHOUT, It'S fine.",
    "def f(x):\n    return x * 2  # double\n\nfor i in range(10):\n\tprint(i, f(i))\n",
    "int main() { std::vector<int> v{1, 2, 3}; return v.size() == 3 ? 0 : 1; }",
    "Prices: $3.50, €12,99, 1,234,567.89 and 2026-12-07T20:42:00Z; version 0.17.6.",
    "Größe, Straße, Äpfel und Öl; café, naïve, façade, résumé, coöperate.",
    "Москва — столица России. Ёжик в тумане.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "我们在北京的天安门广场。这是一个测试句子，包含标点符号！",
    "日本語のテキスト、カタカナとひらがな。東京タワー",
    "한국어 문장입니다. 서울은 아름답다.",
    "مرحبا بالعالم، هذا اختبار.",
    "Emoji: 😀👍🏽🎉 and flags 🇩🇪🇫🇷, a family 👨‍👩‍👧‍👦.",
    "   leading spaces, trailing spaces   \n\n\nmultiple newlines\r\nwindows line\r\n",
    "tabs\tand\t\tmore\ttabs;   mixed \t \n whitespace",
    "URL: https://example.com/a/b?c=d&e=f#g and e-mail a.b+c@example.org",
    "Numbers 0 1 12 123 1234 12345 3.14159 -42 1e-5 0x1F",
    "<|im_start|>user\nWhat is in <|vision_start|><|image_pad|><|vision_end|>?<|im_end|>\n",
    "<|im_start|>assistant\nA red circle and a blue square.<|im_end|><|endoftext|>",
]
WORDS = ("model cache image token layer prefill decode linker loader vision text attention "
         "position rotary merge patch window grid tile Mosaic serving cluster node").split()


def corpus(seed, n):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(SNIPPETS)]
        for _ in range(rng.randint(3, 12)):
            w = rng.choice(WORDS)
            w = w.upper() if rng.random() < 0.1 else (w.title() if rng.random() < 0.2 else w)
            parts.append(w + rng.choice([" ", " ", ", ", ". ", "\n", "  ", "'s ", "-"]))
        parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        out.append("".join(parts))
    return out


def held_out():
    rng = random.Random(7)
    cases = list(SNIPPETS)
    cases.append(unicodedata.normalize("NFD", "café résumé Ångström Ñandú"))  # NFC matters
    cases.append("a" * 300 + " " * 40 + "b")
    cases.append("\n" * 5 + " \n \n" + "x" + " " * 7)
    cases.append("   ")
    cases.append("")
    cases.append("<|im_start|><|im_end|><|im_start|>")
    cases.append("<|im_start|" + "|im_end|>")  # almost special: ordinary text
    cases.append("\u00a0non-breaking\u2003em space\u3000ideographic")
    cases.append("zero\u200bwidth and \ufeffBOM and combining e\u0301\u0327")
    for _ in range(40):
        k = rng.randint(1, 4)
        cases.append("".join(rng.choice(SNIPPETS)[rng.randint(0, 10):] for _ in range(k)))
    return cases


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "tests/data/hf_bpe")
    ap.add_argument("--vocab", type=int, default=2000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(1, 3000), trainer)
    tok.save(str(args.out / "tokenizer.json"))

    cases = []
    for text in held_out():
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    whole = "\n".join(c["text"] for c in cases)
    cases.append({"text": whole, "ids": tok.encode(whole, add_special_tokens=False).ids,
                  "decoded": None})
    (args.out / "goldens.json").write_text(
        json.dumps({"made_by": "tools/golden/make_bpe_goldens.py", "cases": cases},
                   ensure_ascii=False, indent=0) + "\n")
    print(f"{len(cases)} cases, vocab {tok.get_vocab_size()}, in {args.out}")


if __name__ == "__main__":
    main()
