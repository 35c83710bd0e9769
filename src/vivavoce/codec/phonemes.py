"""Phoneme vocabulary of the tokenizer's CTC head: espeak-ng IPA strings <-> integer ids (0 = CTC blank)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

VOCAB_FILE = Path(__file__).with_name("phonemes.txt")
DROPPED = set("ˈˌ ‿-_.,;:!?'\"()|ˑ")


@lru_cache(maxsize=None)
def vocabulary() -> tuple[str, ...]:
    lines = (line.strip() for line in VOCAB_FILE.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def vocab_size() -> int:
    """Number of CTC classes, blank included."""
    return len(vocabulary()) + 1


def encode_phonemes(ipa: str) -> list[int]:
    """Split an IPA string into vocabulary units (longest match) -> ids; unknown symbols are skipped."""
    units = vocabulary()
    index = {u: i + 1 for i, u in enumerate(units)}
    longest = max(len(u) for u in units)
    text = "".join(ch for ch in ipa if ch not in DROPPED)
    ids, i = [], 0
    while i < len(text):
        for n in range(min(longest, len(text) - i), 0, -1):
            if text[i : i + n] in index:
                ids.append(index[text[i : i + n]])
                i += n
                break
        else:
            i += 1
    return ids


def decode_phonemes(ids) -> str:
    units = vocabulary()
    return " ".join(units[i - 1] for i in ids if 0 < i <= len(units))


def ctc_greedy(logits_argmax) -> list[int]:
    """Collapse repeats and drop blanks of a frame-wise argmax sequence."""
    out, prev = [], 0
    for i in map(int, logits_argmax):
        if i != prev and i != 0:
            out.append(i)
        prev = i
    return out
