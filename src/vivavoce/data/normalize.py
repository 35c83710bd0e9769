"""Make text speakable: numbers and symbols as words, no markdown or lists, short enough to say in one breath.

Both TTS engines read digits and symbols in their own ways (Piper skips some, espeak spells others), and the
phoneme labels must match what is heard, so every text is normalised here before any engine sees it.
"""

from __future__ import annotations

import re

from vivavoce.textnorm import _ONES, ends_sentence, split_sentences, year_to_words  # noqa: F401 (re-exported)
from vivavoce.textnorm import number_to_words as _cardinal

_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def number_to_words(n: int) -> str:
    """Cardinal English words (the shared textnorm's), with negatives: -3 -> 'minus three'."""
    return "minus " + _cardinal(-n) if n < 0 else _cardinal(n)


def ordinal_to_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _decimal(m: re.Match) -> str:
    whole, frac = m.group(1).replace(",", ""), m.group(2)
    return number_to_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in frac)


def _integer(m: re.Match) -> str:
    text = m.group(0).replace(",", "")
    n = int(text)
    if len(text) == 4 and 1100 <= n <= 2099 and "," not in m.group(0):
        return year_to_words(n)
    return number_to_words(n)


_SYMBOLS = [
    (re.compile(r"(\d)\s*%"), r"\1 percent"),
    (re.compile(r"\$\s*(\d[\d,]*(?:\.\d+)?)"), r"\1 dollars"),
    (re.compile(r"£\s*(\d[\d,]*(?:\.\d+)?)"), r"\1 pounds"),
    (re.compile(r"€\s*(\d[\d,]*(?:\.\d+)?)"), r"\1 euros"),
    (re.compile(r"(\d)\s*°\s*C\b"), r"\1 degrees Celsius"),
    (re.compile(r"(\d)\s*°\s*F\b"), r"\1 degrees Fahrenheit"),
    (re.compile(r"(\d)\s*°"), r"\1 degrees"),
    (re.compile(r"(\d)\s*km\b"), r"\1 kilometres"),
    (re.compile(r"(\d)\s*kg\b"), r"\1 kilograms"),
    (re.compile(r"(\d)\s*cm\b"), r"\1 centimetres"),
    (re.compile(r"(\d)\s*mm\b"), r"\1 millimetres"),
    (re.compile(r"(\d)\s*m\b"), r"\1 metres"),
    (re.compile(r"(\d)\s*-\s*(\d)"), r"\1 to \2"),
    (re.compile(r"(\d)\s*\+\s*(\d)"), r"\1 plus \2"),
    (re.compile(r"(\d)\s*[x×*]\s*(\d)"), r"\1 times \2"),
    (re.compile(r"(\d)\s*/\s*(\d)"), r"\1 divided by \2"),
    (re.compile(r"(\d)\s*=\s*(\d)"), r"\1 equals \2"),
    (re.compile(r"&"), " and "),
    (re.compile(r"@"), " at "),
    (re.compile(r"\be\.g\.", re.I), "for example"),
    (re.compile(r"\bi\.e\.", re.I), "that is"),
    (re.compile(r"\betc\.", re.I), "and so on"),
    (re.compile(r"\bDr\."), "Doctor"),
    (re.compile(r"\bMr\."), "Mister"),
    (re.compile(r"\bMrs\."), "Missus"),
    (re.compile(r"\bSt\."), "Saint"),
]
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b(\d[\d,]*)\.(\d+)\b")
_INTEGER = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+\b")
_MARKDOWN = re.compile(r"[*_`#>|~\[\]{}<>^\\]")
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.M)


def normalize_text(text: str) -> str:
    """Numbers, units and symbols spelled out; quotes, markdown and brackets removed; whitespace collapsed."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2014", ", ").replace("\u2013", " to ").replace("…", ".")
    for pattern, repl in _SYMBOLS:
        text = pattern.sub(repl, text)
    text = _ORDINAL.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _DECIMAL.sub(_decimal, text)
    text = _INTEGER.sub(_integer, text)
    text = _MARKDOWN.sub(" ", text)
    text = re.sub(r"[()\"]", "", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", " ".join(text.split()))
    return text.strip()


_SPEAKABLE = re.compile(r"^[A-Za-z0-9 ,.!?;:'\-]+$")


def word_count(text: str) -> int:
    return len(text.split())


def speakable_answer(raw: str, max_words: int = 40) -> tuple[str | None, str]:
    """(speakable text, "") or (None, reason). Keeps whole sentences only, up to `max_words` words."""
    if _LIST_LINE.search(raw) or "**" in raw or "```" in raw or re.search(r"^\s*#", raw, re.M):
        return None, "markdown or list"  # paragraphs are fine: they are joined
    text = normalize_text(raw)
    if not text:
        return None, "empty"
    sentences = split_sentences(text)
    kept: list[str] = []
    for s in sentences:
        if not ends_sentence(s):
            break  # cut off by the token limit: an unfinished sentence is not speakable
        if word_count(" ".join(kept + [s])) > max_words:
            break
        kept.append(s)
    if not kept:
        return None, "no complete sentence within the word limit"
    text = " ".join(kept)
    if not _SPEAKABLE.match(text):
        bad = sorted({ch for ch in text if not _SPEAKABLE.match(ch)})
        return None, f"unspeakable characters {''.join(bad)!r}"
    return text, ""
