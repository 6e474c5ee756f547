"""A word-level tokenizer over the toy world's vocabulary, saved in the transformers format."""

from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .vocab import SPECIAL_TOKENS, WORDS

MAX_LENGTH = 16
PAD, UNK, BOS, EOS = SPECIAL_TOKENS


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Words outside the vocabulary map to `<|unk|>`; prompts are wrapped in BOS/EOS like CLIP's."""
    # The pre-tokenizer splits "circle's" into "circle", "'", "s".
    words = list(SPECIAL_TOKENS) + list(dict.fromkeys(WORDS))
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=MAX_LENGTH,
    )
