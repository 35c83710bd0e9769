"""Text normalisation shared by evaluation (WER) and data synthesis: numbers to words, symbols, case."""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()  # fmt: skip
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_SYMBOLS = {"%": " percent", "&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "$": " dollars "}

# Where a sentence ends: . ! or ? (closing quotes or brackets may follow), but not the point of a number ("3.").
# One definition for its three users: stopping a spoken answer, cutting streamed text into speakable pieces, and
# splitting an answer into sentences.
SENTENCE_END = r"(?<![0-9])[.!?][\"')\]]*"
_SENTENCE_BREAK = re.compile(SENTENCE_END + r"(?=\s)")
_ENDS_SENTENCE = re.compile(SENTENCE_END + r"\s*$")


def ends_sentence(text: str) -> bool:
    """True where `text` ends at a sentence end (trailing spaces allowed)."""
    return _ENDS_SENTENCE.search(text) is not None


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, each with its end mark, without the spaces between them."""
    out, at = [], 0
    for m in _SENTENCE_BREAK.finditer(text):
        out.append(text[at:m.end()].strip())
        at = m.end()
    out.append(text[at:].strip())
    return [s for s in out if s]


def number_to_words(n: int) -> str:
    """English words for a non-negative integer, e.g. 1889 -> 'one thousand eight hundred eighty nine'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, word in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_to_words(head)} {word}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """How a year is said: 1889 -> 'eighteen eighty nine', 2005 -> 'two thousand five'."""
    if 1100 <= n <= 1999 and n % 100 != 0:
        return f"{number_to_words(n // 100)} {number_to_words(n % 100) if n % 100 >= 10 else 'oh ' + _ONES[n % 100]}"
    return number_to_words(n)


def spell_numbers(text: str) -> str:
    """Digits in running text as words; 4-digit numbers that look like years are read as years."""

    def one(m: re.Match) -> str:
        digits = m.group(0).replace(",", "")
        if "." in digits:
            whole, frac = digits.split(".", 1)
            return f"{number_to_words(int(whole))} point {' '.join(_ONES[int(d)] for d in frac)}"
        n = int(digits)
        return year_to_words(n) if len(digits) == 4 and 1100 <= n <= 2099 else number_to_words(n)

    text = re.sub(r"(?<=\d)(st|nd|rd|th)\b", "", text)
    return re.sub(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", one, text)


def normalize_for_wer(text: str) -> str:
    """Lower case, numbers as words, symbols as words, punctuation gone: what WER compares."""
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = spell_numbers(text).lower().replace("-", " ")
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"'(?!(s|t|re|ve|ll|d|m)\b)", " ", text)  # quotes, not apostrophes of contractions
    return " ".join(text.split())
