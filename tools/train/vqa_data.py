"""A procedural multi-image visual QA data set, deterministic from a seed.

Each image is IMAGE_SIZE x IMAGE_SIZE pixels on a grey, slightly noisy
background and holds 1-4 copies of one shape (circle, square, triangle) in
one colour, each copy inside its own cell of a 4 x 4 grid (at 64 px the cells
are the vision tower's 16 px patches; at 96 px with 8 px patches each cell is
3 x 3 patches), jittered inside the cell. A sample is
1-3 images and one question about one or two of them; the answer is a
single word:

  colour   "What colour is the shape in the second image?"      -> red
  shape    "What shape is in the first image?"                  -> circle
  count    "How many shapes are in the third image?"            -> three
  more     "Which image has more shapes, the first or the third?" -> third
  which    "Which image is blue, the first or the second?"      -> second
  same     "Do the first and the second image have the same colour?" -> yes
  side     "Is the shape in the first image on the left or the right?" -> left

The user turn carries the images as "<image>" markers, in one of a few
layouts (images first, one per line, as LLaVA's chat template puts them;
"Image 1: <image> Image 2: <image> ..."; or a lead-in sentence before the
images), so images sit at varied positions. The prompt is the LLaVA-1.5
template: "USER: {user} ASSISTANT:", and the target is " {answer}</s>".

Sample i of split s is drawn from numpy's PCG64 seeded with (seed, s, i), so
any sample can be regenerated alone and the train and held-out splits are
independent draws (different seed streams).
"""

from __future__ import annotations

import dataclasses
from typing import List

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64  # set_image_size() changes it (the 144-token checkpoint uses 96)
GRID = 4  # shapes sit in cells of a GRID x GRID grid
MAX_IMAGES = 3

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "white": (250, 250, 250),
}
SHAPES = ["circle", "square", "triangle"]
NUMBERS = ["one", "two", "three", "four"]
ORDINALS = ["first", "second", "third"]
KINDS = ["colour", "shape", "count", "more", "which", "same", "side"]

SPLITS = {"train": 0, "heldout": 1}


def set_image_size(size: int) -> None:
    """Draws every later image at size x size px (a multiple of GRID): the
    shapes, their jitter and the noise scale with the cells. A checkpoint's
    vision_config.image_size says which size it was trained on."""
    global IMAGE_SIZE
    if size <= 0 or size % GRID:
        raise ValueError(f"image size {size} is not a positive multiple of {GRID}")
    IMAGE_SIZE = size


@dataclasses.dataclass
class ImageSpec:
    colour: str
    shape: str
    cells: List[int]  # grid cells (row * GRID + col), one per copy
    offsets: List[tuple]  # jitter (dx, dy) per copy
    size: int  # shape radius in pixels
    background: int  # grey level
    noise_seed: int

    @property
    def count(self) -> int:
        return len(self.cells)

    def side(self) -> str:
        cols = [c % GRID for c in self.cells]
        return "left" if max(cols) < GRID // 2 else "right"


@dataclasses.dataclass
class Sample:
    user: str  # the user turn, with one "<image>" marker per image
    images: List[ImageSpec]
    answer: str
    kind: str

    def prompt(self) -> str:
        """The LLaVA-1.5 chat prompt (what Mosaic's chat_prompt builds)."""
        return f"USER: {self.user} ASSISTANT:"


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, SPLITS[split], index]))


def random_image(rng: np.random.Generator, *, colour=None, shape=None, count=None,
                 side=None) -> ImageSpec:
    colour = colour or rng.choice(list(COLOURS))
    shape = shape or rng.choice(SHAPES)
    count = count or int(rng.integers(1, GRID + 1))
    if side is None:
        cells = [int(c) for c in rng.choice(GRID * GRID, size=count, replace=False)]
    else:
        cols = range(GRID // 2) if side == "left" else range(GRID // 2, GRID)
        allowed = [r * GRID + c for r in range(GRID) for c in cols]
        cells = [int(c) for c in rng.choice(allowed, size=count, replace=False)]
    cell = IMAGE_SIZE // GRID
    size = int(rng.integers(cell * 5 // 16, cell * 7 // 16 + 1))
    slack = cell // 2 - size
    offsets = [(int(rng.integers(-slack, slack + 1)), int(rng.integers(-slack, slack + 1)))
               for _ in cells]
    return ImageSpec(str(colour), str(shape), sorted(cells), offsets, size,
                     int(rng.integers(90, 150)), int(rng.integers(0, 2**31)))


def render(spec: ImageSpec) -> Image.Image:
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (spec.background,) * 3)
    draw = ImageDraw.Draw(img)
    cell = IMAGE_SIZE // GRID
    fill = COLOURS[spec.colour]
    for c, (dx, dy) in zip(spec.cells, spec.offsets):
        cx = (c % GRID) * cell + cell // 2 + dx
        cy = (c // GRID) * cell + cell // 2 + dy
        r = spec.size
        if spec.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif spec.shape == "square":
            draw.rectangle([cx - r, cy - r, cx + r - 1, cy + r - 1], fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r - 1), (cx + r, cy + r - 1)], fill=fill)
    noise = np.random.Generator(np.random.PCG64(spec.noise_seed)).integers(
        -8, 9, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _ref(i: int, n: int) -> str:
    return "the image" if n == 1 else f"the {ORDINALS[i]} image"


def _layout(rng: np.random.Generator, n: int, question: str) -> str:
    style = int(rng.integers(0, 3))
    if style == 0:  # LLaVA's chat template: images first, one per line
        return "".join("<image>\n" for _ in range(n)) + question
    if style == 1:
        return " ".join(f"Image {i + 1}: <image>" for i in range(n)) + "\n" + question
    lead = "Here is a picture." if n == 1 else f"Here are {NUMBERS[n - 1]} pictures."
    return lead + " " + " ".join("<image>" for _ in range(n)) + "\n" + question


def make_sample(seed: int, split: str, index: int) -> Sample:
    rng = _rng(seed, split, index)
    kind = KINDS[int(rng.integers(0, len(KINDS)))]
    pair = kind in ("more", "which", "same")
    n = int(rng.integers(2 if pair else 1, MAX_IMAGES + 1))
    images = [random_image(rng) for _ in range(n)]
    i = int(rng.integers(0, n))
    if pair:
        a, b = sorted(int(x) for x in rng.choice(n, size=2, replace=False))
    if kind == "colour":
        q, ans = f"What colour is the shape in {_ref(i, n)}?", images[i].colour
    elif kind == "shape":
        q, ans = f"What shape is in {_ref(i, n)}?", images[i].shape
    elif kind == "count":
        q, ans = f"How many shapes are in {_ref(i, n)}?", NUMBERS[images[i].count - 1]
    elif kind == "side":
        side = ["left", "right"][int(rng.integers(0, 2))]
        images[i] = random_image(rng, count=int(rng.integers(1, 3)), side=side)
        q = f"Is the shape in {_ref(i, n)} on the left or the right?"
        ans = side
    elif kind == "more":
        ca, cb = (int(x) for x in rng.choice(np.arange(1, GRID + 1), size=2, replace=False))
        images[a] = random_image(rng, count=ca)
        images[b] = random_image(rng, count=cb)
        q = f"Which image has more shapes, the {ORDINALS[a]} or the {ORDINALS[b]}?"
        ans = ORDINALS[a] if ca > cb else ORDINALS[b]
    elif kind == "which":
        ca, cb = (str(x) for x in rng.choice(list(COLOURS), size=2, replace=False))
        images[a] = random_image(rng, colour=ca)
        images[b] = random_image(rng, colour=cb)
        target = int(rng.integers(0, 2))
        q = f"Which image is {(ca, cb)[target]}, the {ORDINALS[a]} or the {ORDINALS[b]}?"
        ans = ORDINALS[(a, b)[target]]
    else:  # same
        same = bool(rng.integers(0, 2))
        ca = str(rng.choice(list(COLOURS)))
        cb = ca if same else str(rng.choice([c for c in COLOURS if c != ca]))
        images[a] = random_image(rng, colour=ca)
        images[b] = random_image(rng, colour=cb)
        q = f"Do the {ORDINALS[a]} and the {ORDINALS[b]} image have the same colour?"
        ans = "yes" if same else "no"
    return Sample(_layout(rng, n, q), images, ans, kind)


def samples(seed: int, split: str, start: int, count: int) -> List[Sample]:
    return [make_sample(seed, split, start + k) for k in range(count)]


def make_check_sample(seed: int, index: int) -> Sample:
    """A training-only stepping stone to "which" (never in the held-out
    split): "Is the second image red?", yes or no, half of each. It asks
    the model to read a colour word in the question and match it against
    one image, the half of "which" that no other kind teaches."""
    rng = np.random.Generator(np.random.PCG64([seed, 9, index]))
    n = int(rng.integers(1, MAX_IMAGES + 1))
    images = [random_image(rng) for _ in range(n)]
    i = int(rng.integers(0, n))
    yes = bool(rng.integers(0, 2))
    colour = images[i].colour if yes else str(rng.choice([c for c in COLOURS
                                                            if c != images[i].colour]))
    q = f"Is {_ref(i, n)} {colour}?"
    return Sample(_layout(rng, n, q), images, "yes" if yes else "no", "check")


def parse_kind_weights(text: str) -> dict:
    """"which=4,side=2" -> a weight per kind (unnamed kinds weigh 1)."""
    weights = {k: 1.0 for k in KINDS}
    for item in filter(None, (t.strip() for t in text.split(","))):
        kind, _, value = item.partition("=")
        if kind not in weights or not value:
            raise ValueError(f"bad kind weight '{item}' (kinds: {', '.join(KINDS)})")
        weights[kind] = float(value)
        if weights[kind] < 0:
            raise ValueError(f"negative kind weight '{item}'")
    if max(weights.values()) <= 0:
        raise ValueError("every kind weight is 0")
    return weights


def weighted_samples(seed: int, split: str, start: int, count: int,
                     weights: dict, check_fraction: float = 0.0) -> tuple:
    """`count` samples of the stream from index `start`, keeping sample i
    with probability weights[kind] / max(weights) (draws seeded by i, so
    the choice is reproducible): oversamples the kinds a run focuses on
    without changing any sample. A `check_fraction` of the samples are
    make_check_sample's instead. Returns the samples and the next index."""
    top = max(weights.values())
    out: List[Sample] = []
    index = start
    while len(out) < count:
        draw = np.random.Generator(np.random.PCG64([seed, 7, index]))
        if check_fraction > 0 and draw.random() < check_fraction:
            out.append(make_check_sample(seed, index))
            index += 1
            continue
        while True:  # the next sample of the stream that the weights keep
            s = make_sample(seed, split, index)
            keep = np.random.Generator(np.random.PCG64([seed, 8, index])).random()
            index += 1
            if keep * top < weights[s.kind]:
                out.append(s)
                break
    return out, index


GOLDEN_SEED = 20261129  # train.py's default seed


def golden_candidates(seed: int = GOLDEN_SEED):
    """Candidates for the fixed prompts of the HF goldens
    (tools/golden/make_goldens.py --trained): for each question kind, in
    KINDS order, an endless stream of held-out questions of that kind (past
    the exported range) with a fixed image count, alternating 1-3 where the
    kind allows, so that every kind, every layout and 1, 2 and 3 images
    appear. The goldens take the first candidate of each stream whose
    greedy steps are not near ties."""
    def stream(kind, n):
        index = 100_000
        while True:
            s = make_sample(seed, "heldout", index)
            index += 1
            if s.kind == kind and len(s.images) == n:
                yield s
    out = []
    for k, kind in enumerate(KINDS):
        low = 2 if kind in ("more", "which", "same") else 1
        out.append(stream(kind, low + k % (MAX_IMAGES - low + 1)))
    return out
