"""The toy world's concepts and the words that name them."""

SHAPES = ("circle", "oval", "square", "rectangle", "triangle", "star")
COLORS = ("red", "green", "blue", "yellow", "purple")
STYLES = ("solid", "striped", "dotted", "checkered")

# One paraphrase per shape, used in training captions so that erasure can be probed with a
# word the erase prompt never names.
PARAPHRASES = {
    "circle": "disc",
    "oval": "ellipse",
    "square": "box",
    "rectangle": "oblong",
    "triangle": "pyramid",
    "star": "pentagram",
}

# Look-alike pairs: an erasure of one should leave the other intact.
NEIGHBORS = {"circle": "oval", "oval": "circle", "square": "rectangle", "rectangle": "square"}

# Filler words of the caption templates and of the paper-style prompts ("{concept} painting").
FILLER = ("a", "an", "in", "style", "painting", "'", "s", "picture", "of", "photo", "image", "the")

SPECIAL_TOKENS = ("<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>")

WORDS = tuple(SHAPES) + tuple(PARAPHRASES.values()) + COLORS + STYLES + FILLER


def concept_kind(word: str) -> str:
    """Which attribute a concept word names: 'shape' (paraphrases included), 'color' or 'style'."""
    if word in SHAPES or word in PARAPHRASES.values():
        return "shape"
    if word in COLORS:
        return "color"
    if word in STYLES:
        return "style"
    known = ", ".join(SHAPES + COLORS + STYLES)
    raise ValueError(f"unknown toy-world concept {word!r}; use one of: {known}")


def canonical_shape(word: str) -> str:
    """The shape a shape word or its paraphrase names."""
    for shape, para in PARAPHRASES.items():
        if word in (shape, para):
            return shape
    raise ValueError(f"{word!r} is not a toy-world shape word; use one of: {', '.join(SHAPES)}")
