"""Local tokenizers: load one from a folder (never from a hub), or train a byte-level BPE."""

from __future__ import annotations

from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Iterable

import numpy as np


class TokenizerError(ValueError):
    pass


def pack(ids: list[list[int]], eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(one int64 token stream with EOS after each document, document start offsets)."""
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    starts = np.cumsum(lengths) - lengths
    stream = np.fromiter(chain.from_iterable(chain(x, (eos,)) for x in ids), dtype=np.int64, count=int(lengths.sum()))
    return stream, starts


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """A Hugging Face tokenizer from a local folder; a clear error when the folder is not one."""
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise TokenizerError(f"tokenizer {path!r} is not a folder; give the local path of a saved "
                             "Hugging Face tokenizer (e.g. one written by `thresher train-reference`)")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{folder}: cannot load a tokenizer ({exc})") from None


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE (GPT-2 style) on `texts` and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast
