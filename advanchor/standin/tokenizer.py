"""Stable Diffusion 1.x's tokenizer (CLIP ViT-L/14's byte-level BPE), built offline.

The BPE merges are the file `open_clip/bpe_simple_vocab_16e6.txt.gz` that the `open-clip-torch` wheel
ships. It is located through the wheel's metadata, so neither open_clip nor its dependencies
(torchvision among them) are imported: `pip install --no-deps open-clip-torch` is all it needs.
The vocabulary follows CLIP's `SimpleTokenizer`: the 256 byte symbols, the same with the end-of-word
mark `</w>`, one token per merge, then the two special tokens, 49,408 in all.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import tempfile
from pathlib import Path

BPE_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges: 49,152 symbols less the bytes and the specials
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 2 * 256 + MERGES + 2


def bpe_path() -> Path:
    """The installed open-clip-torch wheel's BPE file; a one-line error naming the install when absent."""
    try:
        path = Path(importlib.metadata.distribution("open_clip_torch").locate_file(BPE_FILE))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "CLIP's BPE merges come from open-clip-torch, which is not installed; "
            "run `pip install --no-deps open-clip-torch` (its dependencies are not needed)"
        )
    return path


def byte_symbols() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 bytes, in vocabulary order: the bytes that print
    as themselves first, then the others, mapped to code points from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def merges() -> list[str]:
    """The merges CLIP uses, one "left right" pair per line (the file's header line left out)."""
    with gzip.open(bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return lines[1 : MERGES + 1]


def vocabulary(pairs: list[str]) -> dict[str, int]:
    """Token -> id, in CLIP's order."""
    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(p.replace(" ", "") for p in pairs), BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def write_clip_tokenizer(directory: str | Path):
    """Save SD 1.x's tokenizer (`transformers.CLIPTokenizer`, 77 tokens, lower-cased) to `directory`; returns it."""
    from transformers import CLIPTokenizer

    pairs = merges()
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps(vocabulary(pairs), ensure_ascii=False))
        merges_file.write_text("#version: 0.2\n" + "\n".join(pairs) + "\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(
            str(vocab),
            str(merges_file),
            bos_token=BOS,
            eos_token=EOS,
            unk_token=EOS,
            pad_token=EOS,
            model_max_length=77,
        )
    tokenizer.save_pretrained(str(directory))
    return tokenizer
