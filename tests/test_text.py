import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_pipeline  # noqa: E402

from advanchor.text import encode, perturbed_embeddings, token_positions, tokenize  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_token_positions_find_every_occurrence(pipe):
    assert token_positions(pipe.tokenizer, "a red circle", "circle") == [3]
    assert token_positions(pipe.tokenizer, "circle's painting", "circle") == [1]
    assert token_positions(pipe.tokenizer, "a circle in circle style", "circle") == [2, 4]


def test_unknown_or_absent_concept_words_are_clear_errors(pipe):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        token_positions(pipe.tokenizer, "a dragon", "dragon")
    with pytest.raises(ValueError, match="does not occur in prompt"):
        token_positions(pipe.tokenizer, "a red square", "circle")


def test_zero_delta_is_the_identity(pipe):
    te, tok = pipe.text_encoder, pipe.tokenizer
    clean = encode(te, tok, ["a red circle"])
    with perturbed_embeddings(te, torch.zeros(1, te.config.hidden_size), [3]):
        assert torch.equal(encode(te, tok, ["a red circle"]), clean)


def test_delta_changes_only_target_positions_and_is_removed(pipe):
    te, tok = pipe.text_encoder, pipe.tokenizer
    embed = te.get_input_embeddings()
    ids = tokenize(tok, ["a red circle", ""])
    clean = embed(ids)
    delta = torch.randn(1, te.config.hidden_size)
    with perturbed_embeddings(te, delta, [3], rows=slice(0, 1)):
        perturbed = embed(ids)
    diff = (perturbed - clean).abs().sum(-1)  # (B, L)
    assert diff[0, 3] > 0
    assert diff[0].nonzero().flatten().tolist() == [3]
    assert torch.equal(perturbed[1], clean[1]), "the empty prompt must be untouched"
    assert torch.equal(embed(ids), clean), "the hook must be gone after the context"


def test_causal_text_encoder_keeps_earlier_tokens(pipe):
    te, tok = pipe.text_encoder, pipe.tokenizer
    clean = encode(te, tok, ["a red circle"])
    with perturbed_embeddings(te, torch.randn(1, te.config.hidden_size), [3]):
        out = encode(te, tok, ["a red circle"])
    assert torch.allclose(out[0, :3], clean[0, :3], atol=1e-6)  # CLIP attends causally
    assert not torch.allclose(out[0, 3:], clean[0, 3:])


def test_gradients_reach_delta_and_nothing_else(pipe):
    te, tok = pipe.text_encoder, pipe.tokenizer
    te.requires_grad_(False)
    delta = torch.nn.Parameter(torch.zeros(1, te.config.hidden_size))
    with perturbed_embeddings(te, delta, [3]):
        encode(te, tok, ["a red circle"]).pow(2).sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert all(p.grad is None for p in te.parameters())
