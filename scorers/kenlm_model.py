"""KenLM: CCNet's normalisation and document perplexity, and training with KenLM's own lmplz.

CCNet (Wenzek et al. 2020) scores a document line by line (cc_net/perplexity.py, `DocLM.do`):
each "\n"-separated line is normalised (cc_net/text_normalizer.py, `normalize`: stripped,
lowercased, accents removed, digits -> 0, unicode punctuation -> ASCII, code points 0-31 (tab
included) and 127-159 removed), and every line, an empty one too, adds kenlm's log10 score with
<s> and </s> and its word count + 1; perplexity = 10 ** (-sum of scores / sum of lengths). That is
the default here, computed with Arrow kernels on a whole batch and tested against cc_net's code.

Two departures, each a named option, both off by default:
- `split_punctuation`: CCNet's models read SentencePiece pieces. Without a SentencePiece model,
  splitting punctuation from words ("it's," -> "it ' s ,") stands in for it and gives a
  word-level model fewer unseen words. Train and score with the same setting.
- `empty_lines="skip"`: empty lines add nothing (CCNet counts each as one </s>).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.scorers.hashing import filled_array

PUNCT = {  # cc_net's UNICODE_PUNCT, applied after digits -> 0 (so a full-width 1 becomes 0, not ")
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...",
    "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
}
_ANY_PUNCT = "[" + "".join(PUNCT) + "]"
_NON_PRINTING = r"[\x{0}-\x{9}\x{b}-\x{1f}\x{7f}-\x{9f}]+"  # 0-31 and 127-159; "\n" only separates lines
# str.strip()'s whitespace (Python's isspace), the line break aside: stripped at both ends of every line.
_SPACE = "".join(f"\\x{{{c:x}}}" for c in range(0x3001) if chr(c).isspace() and c != 10)
_STRIP_LINES = f"(?m)^[{_SPACE}]+|[{_SPACE}]+$"
# Python lowercases a final capital sigma to a final sigma; Arrow's per-character lowercase cannot.
_CONTEXT_LOWER = "Σ"


def normalize(texts: pa.Array | pa.ChunkedArray | list, split_punctuation: bool = False) -> pa.Array:
    """CCNet's normalisation of every line of every text (null -> ""); lines are kept, empty ones too."""
    raw = filled_array(texts)
    t = pc.replace_substring_regex(raw, _STRIP_LINES, "")
    t = pc.utf8_normalize(pc.utf8_lower(t), "NFD")
    t = pc.replace_substring_regex(t, r"\p{Mn}+", "")  # accents: combining marks after NFD
    t = pc.replace_substring_regex(t, r"\p{Nd}", "0")
    has_punct = pc.match_substring_regex(t, _ANY_PUNCT)
    if pc.any(has_punct).as_py():  # few rows have any: map them only
        sub = t.filter(has_punct)
        for k, v in PUNCT.items():
            sub = pc.replace_substring(sub, k, v)
        t = pc.replace_with_mask(t, has_punct, sub)
    t = pc.replace_substring_regex(t, _NON_PRINTING, "")
    sigma = pc.match_substring(raw, _CONTEXT_LOWER)
    if pc.any(sigma).as_py():
        redo = ["\n".join(map(_normalize_line, x.split("\n"))) for x in raw.filter(sigma).to_pylist()]
        t = pc.replace_with_mask(t, sigma, pa.array(redo, pa.string()))
    if split_punctuation:
        t = pc.replace_substring_regex(t, r"([^\p{L}\p{N}_\p{Z}\n])", r" \1 ")
        t = pc.replace_substring_regex(t, r"\p{Z}+", " ")
        t = pc.replace_substring_regex(t, r"(?m)^ | $", "")
    return t


def word_counts(lines: pa.Array) -> pa.Array:
    """len(line.split()) of each line: the words kenlm's Python API scores (it splits with str.split())."""
    return pc.count_substring_regex(lines, f"[^{_SPACE}\\n]+")


def ccnet_normalize(text: str, split_punctuation: bool = False) -> str:
    return normalize([text], split_punctuation)[0].as_py()


_PUNCT_TABLE = str.maketrans(PUNCT)
_NON_PRINTING_TABLE = dict.fromkeys([*range(0, 32), *range(127, 160)])


def _normalize_line(line: str) -> str:
    """One line per character in Python, for the rows whose lowercase depends on context."""
    line = line.strip()
    if not line:
        return line
    line = "".join(c for c in unicodedata.normalize("NFD", line.lower()) if unicodedata.category(c) != "Mn")
    return re.sub(r"\d", "0", line).translate(_PUNCT_TABLE).translate(_NON_PRINTING_TABLE)


def _tool(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError(f"KenLM's {name} is not installed; run `make setup` (tools/build_kenlm.sh builds it "
                            "from the kenlm sources) or put lmplz and build_binary on PATH")


def train_kenlm(texts: Iterable[str], out_prefix: str | Path, order: int = 5, memory: str = "20%",
                split_punctuation: bool = False) -> tuple[Path, Path]:
    """Modified Kneser-Ney with lmplz on the normalised lines; writes PREFIX.arpa and PREFIX.bin.
    Each line is written as its str.split() words, the words kenlm's Python scorer will see."""
    out = Path(out_prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    arpa, binary = out.with_suffix(".arpa"), out.with_suffix(".bin")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        lines = 0
        for batch in _batches(texts, 10_000):
            for norm in normalize(batch, split_punctuation).to_pylist():
                for line in norm.split("\n"):
                    if words := line.split():
                        fh.write(" ".join(words) + "\n")
                        lines += 1
        corpus = fh.name
    try:
        if lines == 0:
            raise ValueError("no text to train a KenLM model on")
        with open(corpus, "rb") as src, open(arpa, "wb") as dst:
            proc = subprocess.run([_tool("lmplz"), "-o", str(order), "-S", memory, "--discount_fallback"],
                                  stdin=src, stdout=dst, stderr=subprocess.PIPE)
        if proc.returncode:
            raise RuntimeError(f"lmplz failed: {proc.stderr.decode(errors='replace')[-1500:]}")
        proc = subprocess.run([_tool("build_binary"), str(arpa), str(binary)], capture_output=True)
        if proc.returncode:
            raise RuntimeError(f"build_binary failed: {proc.stderr.decode(errors='replace')[-1500:]}")
    finally:
        Path(corpus).unlink(missing_ok=True)
    return arpa, binary


def _batches(texts: Iterable[str], size: int):
    batch = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def document_perplexity(model, texts: pa.Array | pa.ChunkedArray | list, split_punctuation: bool = False,
                        empty_lines: Literal["count", "skip"] = "count") -> np.ndarray:
    """Perplexity of each document under a kenlm.Model, CCNet's `DocLM` way by default; NaN for an
    empty document (and, skipping empty lines, one without words). Lines are scored one kenlm
    call each (its API takes one sentence); everything else is on arrays."""
    raw = filled_array(texts)
    lines = pc.split_pattern(normalize(raw, split_punctuation), "\n")
    doc = pc.list_parent_indices(lines).to_numpy()
    flat = pc.list_flatten(lines)
    if empty_lines == "skip":
        kept = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        doc, flat = doc[kept], flat.filter(pa.array(kept))
    score = model.score
    logp = np.fromiter((score(line, bos=True, eos=True) for line in flat.to_pylist()), np.float64, len(flat))
    tokens = word_counts(flat).to_numpy(zero_copy_only=False) + 1
    n = len(raw)
    logp, tokens = np.bincount(doc, logp, minlength=n), np.bincount(doc, tokens, minlength=n)
    empty = pc.equal(raw, "").to_numpy(zero_copy_only=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((tokens > 0) & ~empty, 10.0 ** (-logp / np.maximum(tokens, 1)), np.nan)
