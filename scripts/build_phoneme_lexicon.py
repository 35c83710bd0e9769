"""Writes the speech branch's phoneme lexicon (src/vivavoce/model/lexicon-en-us.json.gz): espeak-ng's phonemes,
in the codec tokenizer's CTC units, of every word the spelling input can name: the backbone's whole-word tokens,
the numbers 0-1000 and 1900-2100, and the words of the given texts (token caches, corpora's manifests: any JSONL
with a "text" field). With it the engine needs no espeak-ng for those words (espeak-ng is GPL and optional at run
time; see model/spelling.py).

    PYTHONPATH=src .venv/bin/python scripts/build_phoneme_lexicon.py /work/data/tokens-ph.jsonl [more.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("texts", nargs="*", help="JSONL files whose rows' \"text\" words are added")
    args = ap.parse_args()

    from vivavoce.errors import VivavoceError
    from vivavoce.model.backbone import load_backbone
    from vivavoce.model.processor import SpeechLMProcessor
    from vivavoce.model.speechlm import SpeechLMConfig
    from vivavoce.model.spelling import LEXICON, letters_of, spelled_words, word_of, write_lexicon

    tokenizer = load_backbone().tokenizer
    proc = SpeechLMProcessor(tokenizer, SpeechLMConfig(split_spelling=True, split_phonemes=True))
    letters, starts = proc._token_spelling
    words = {word_of(ls) for ls, s in zip(letters, starts) if s and ls}  # whole-word tokens
    n_vocab = len(words)
    for path in args.texts:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get("text") or ""
                # the keys the spelling track asks for, and the words as the text splits them
                words.update(spelled_words(letters, starts, tokenizer(text, add_special_tokens=False)["input_ids"]))
                words.update(word_of(letters_of(w)) for w in text.split())
    # Numbers: the backbone splits them into digits, so none is a whole-word token; the LLM writes them often.
    words.update(str(n) for n in [*range(1001), *range(1900, 2101)])
    words.discard("")
    t0 = time.perf_counter()
    try:
        n = write_lexicon(sorted(words))
    except VivavoceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{LEXICON}: {n} words with phonemes of {len(words)} ({n_vocab} from the backbone's vocabulary), "
          f"{LEXICON.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
