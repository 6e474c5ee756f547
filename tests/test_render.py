import numpy as np
import pytest

from advanchor.toyworld.captions import caption
from advanchor.toyworld.render import SIZE, Scene, render, render_dataset
from advanchor.toyworld.tokenizer import build_tokenizer
from advanchor.toyworld.vocab import COLORS, PARAPHRASES, SHAPES, STYLES, canonical_shape, concept_kind


def test_same_seed_same_images_and_scenes():
    a, sa = render_dataset(32, seed=7)
    b, sb = render_dataset(32, seed=7)
    c, _ = render_dataset(32, seed=8)
    assert a.shape == (32, SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_colour_and_style_draws_an_object(shape):
    for color in COLORS:
        for style in STYLES:
            img = render(Scene(shape, color, style), np.random.default_rng(0)).astype(int)
            corner = img[0, 0]
            object_pixels = (np.abs(img - corner).sum(-1) > 60).sum()
            assert 40 < object_pixels < SIZE * SIZE // 2


def test_styles_differ_in_texture():
    rng = lambda: np.random.default_rng(3)  # noqa: E731 - same placement for every style
    solid = render(Scene("square", "blue", "solid"), rng()).astype(int)
    for style in ("striped", "dotted", "checkered"):
        textured = render(Scene("square", "blue", style), rng()).astype(int)
        assert np.abs(textured - solid).sum(-1).max() > 100


def test_unknown_words_are_clear_errors():
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        render(Scene("hexagon", "red", "solid"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown color 'teal'"):
        render(Scene("circle", "teal", "solid"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown toy-world concept 'dragon'"):
        concept_kind("dragon")
    assert canonical_shape("disc") == "circle" and concept_kind("ellipse") == "shape"


def test_captions_cover_templates_paraphrases_and_empty():
    rng = np.random.default_rng(0)
    scenes = [Scene(s, c, t) for s in SHAPES for c in COLORS for t in STYLES] * 20
    caps = [caption(s, rng) for s in scenes]
    empty = sum(c == "" for c in caps) / len(caps)
    assert 0.07 < empty < 0.13
    assert any(PARAPHRASES["circle"] in c.split() for c in caps)
    tok = build_tokenizer()
    ids = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert all(tok.unk_token_id not in row for row in ids), "a caption uses a word outside the vocabulary"
    assert max(len(tok(c).input_ids) for c in caps) <= tok.model_max_length


def test_tokenizer_maps_unknown_words_to_unk():
    tok = build_tokenizer()
    ids = tok("a Red dragon").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert ids[1:-1] == [tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("red"), tok.unk_token_id]
