"""Spelling input of the speech branch: at each position of a text-guided spoken reply, the letters of the word
being said and how many positions it has been said for.

Why: the speech branch otherwise learns each BPE token's sound from its (frozen) embedding, one token at a time,
so a word it has seen rarely or never comes out as babble. Letters sound alike across words; given them at every
position, the branch can learn spelling → sound once for all words, as a TTS encoder does.

What the branch gets, from the grid alone (so a generator can track it one position at a time): in the aligned
guided layout (`processor.py`) each word's first text token sits `delay` positions before the code where its
speech starts. At position p the word being said is the last word whose first token sits at or before p − delay;
its letters are those of its tokens at positions up to its start + delay (all of them, for words of at most
delay + 1 tokens), and its age is p − delay − its start. Ids: letter slot s of symbol c → 1 + s·N + c (0: none),
then the age + 1 (0: no word), then the word's phonemes the same way (`split_phonemes`, zero otherwise): one row of
`WIDTH` per position.

Phonemes (round 18): English spelling is a poor guide to sound, and a few thousand training texts teach the branch
letter → sound for the words it saw, not for new ones. The codec tokenizer was trained to carry espeak-ng's
phonemes (its CTC head reads them from the codes), so given the word's phonemes the branch has a near-direct map to
learn. The phonemes come from a shipped lexicon of espeak-ng's output, and for other words from espeak-ng (GPL) in a
separate process where it is installed (`Phonemizer`).

The phone track (round 19, `split_phone_track`): the phoneme being said, its neighbours in the word and how many
positions it has lasted, in the last TRACK columns. A probe found that codes follow from the phonemes when their
timing is known (a small convolution over the track reads held-out text at WER 0.22, the recordings' own codes
0.25) and not from the word's phonemes with its age alone: the branch had to find its place in the word from its own
past codes, which is what goes astray when it reads freely. In training the index of the phoneme comes from forced
alignment (`Grid.phone_index`); in generation a duration table gives it (`PhoneTiming`), as a TTS duration model
does, and the words' onsets follow the same table, so the track and the layout agree.
"""

from __future__ import annotations

import gzip
import json
import sys
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from vivavoce.codec.phonemes import encode_phonemes, vocabulary
from vivavoce.errors import VivavoceError
from vivavoce.model.speechlm import NONE

SYMBOLS = "abcdefghijklmnopqrstuvwxyz0123456789',.?!;:-"
SLOTS = 16  # letters of a word that are seen (longer words: the first 16)
AGES = 32  # ages 0..31 (older: 31)
# The states at the split point have an RMS of ~19 (SmolLM2-135M, layer 26). A table that starts at zero moves by
# about the learning rate a step under Adam, so unscaled it would stay a hundredth of them for thousands of steps:
# its output is multiplied by this, which acts as a learning-rate multiplier for the table.
SCALE = 16.0
PHONE_SLOTS = 16  # phonemes of a word that are seen
# The phone track (`split_phone_track`): the phone being said, the one before and the one after it, and how many
# positions it has been said for (longer: PHONE_AGES - 1).
TRACK = 4
PHONE_AGES = 16
WIDTH = SLOTS + 1 + PHONE_SLOTS + TRACK
TRACK_AT = SLOTS + 1 + PHONE_SLOTS
_INDEX = {c: i for i, c in enumerate(SYMBOLS)}
_SILENT = str.maketrans({c: None for c in ",.?!;:"} | {"-": " "})


def letters_of(piece: str) -> list[int]:
    return [_INDEX[c] for c in piece.lower() if c in _INDEX]


def word_of(letters: list[int]) -> str:
    """The word as the spelling input sees it (lower case, symbols of SYMBOLS only), ready to be phonemised."""
    return " ".join("".join(SYMBOLS[c] for c in letters).translate(_SILENT).split())


class Phonemizer:
    """Word → phoneme ids of the codec tokenizer's CTC head (`codec/phonemes.py`): from the shipped lexicon
    (`LEXICON`: espeak-ng's output for the backbone's whole-word tokens and the training texts' words), else by
    espeak-ng in a separate process (GPL: never imported, and optional at run time: without it a word outside the
    lexicon gets no phonemes and the speech branch reads its letters alone). Each distinct word is looked up once;
    `prime` phonemises many words in a few calls."""

    def __init__(self, voice: str = "en-us", lexicon: bool = True):
        self.voice = voice
        self.known: dict[str, list[int]] = {"": []}
        if lexicon and voice == LEXICON_VOICE:
            self.known.update(load_lexicon())
        self.unheard = 0  # words that got no phonemes because espeak-ng is not installed

    def __call__(self, word: str) -> list[int]:
        if word not in self.known:
            self.prime([word])
        return self.known[word]

    def prime(self, words, chunk: int = 200) -> None:
        import shutil

        from vivavoce.speechtools.tts import espeak_ipa_lines, espeak_words  # separate processes: espeak-ng is GPL

        todo = sorted({w for w in words if w not in self.known})
        if todo and shutil.which("espeak-ng") is None:
            if not self.unheard:  # once: a token cache made so would hold words without phonemes
                print(f"note: espeak-ng is not installed; words outside the phoneme lexicon get no phonemes "
                      f"(first: {todo[0]!r})", file=sys.stderr)
            self.unheard += len(todo)
            self.known.update({w: [] for w in todo})
            return
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            # Where espeak's lines do not match the words one to one, each word gets a call of its own.
            lines = espeak_words(part, self.voice)
            if lines is None:
                lines = [" ".join(espeak_ipa_lines(w, self.voice, check=False) or []) for w in part]
            self.known.update({w: encode_phonemes(ipa) for w, ipa in zip(part, lines)})


LEXICON = Path(__file__).with_name("lexicon-en-us.json.gz")
LEXICON_VOICE = "en-us"


@lru_cache(maxsize=1)
def load_lexicon() -> dict[str, list[int]]:
    """The shipped lexicon (`scripts/build_phoneme_lexicon.py`), {} where there is none. Its phoneme ids are
    checked against the vocabulary it was written with, so a changed `phonemes.txt` cannot misread it."""
    if not LEXICON.is_file():
        return {}
    data = json.loads(gzip.decompress(LEXICON.read_bytes()))
    if data.get("vocabulary") != list(vocabulary()):
        raise VivavoceError(f"{LEXICON}: written for another phoneme vocabulary; rebuild it "
                            "(scripts/build_phoneme_lexicon.py)")  # fmt: skip
    return data["words"]


def write_lexicon(words, path: Path = LEXICON, voice: str = LEXICON_VOICE) -> int:
    """Phonemise `words` (spelling-input keys, `word_of`) by espeak-ng and store them as the lexicon; returns the
    count of words with phonemes."""
    ph = Phonemizer(voice, lexicon=False)
    ph.prime(words)
    if ph.unheard:
        raise VivavoceError("writing the lexicon needs espeak-ng (apt-get install espeak-ng)")
    table = {w: ph.known[w] for w in sorted(set(words)) if w and ph.known.get(w)}
    blob = json.dumps({"voice": voice, "vocabulary": list(vocabulary()), "words": table}, separators=(",", ":"))
    path.write_bytes(gzip.compress(blob.encode(), mtime=0))
    load_lexicon.cache_clear()
    return len(table)


def duration_keys(phone: int, after: int, pause: int, before: int | None = None) -> tuple[str, ...]:
    """The duration table's keys for a phoneme, finest first: with the phonemes before it (0: the word's start;
    None: no such key) and after it (0: the word's end) and the word's pause class, without the one before, with
    its place in the word and the pause class, alone, and any phoneme."""
    finest = () if before is None else (f"{before}<{phone} {after} {pause}",)
    return *finest, f"{phone} {after} {pause}", f"{phone} {'end' if after == 0 else 'mid'} {pause}", f"{phone}", "*"


def word_duration_keys(phones: list[int], pause: int, before: bool = True) -> list[tuple[str, ...]]:
    """`duration_keys` of each phoneme of a word (`before` False: without the phoneme-before key): what the table is
    fitted by (`lm_align.fit_phone_durations`) and read by (`PhoneTiming`)."""
    n = len(phones)
    return [duration_keys(ph, phones[i + 1] if i + 1 < n else 0, pause, (phones[i - 1] if i else 0) if before else None)
            for i, ph in enumerate(phones)]  # fmt: skip


def spelled_words(token_letters: list[list[int]], word_start: list[bool], ids) -> list[str]:
    """The words (`word_of` keys) a spelling track names in a stream of text token ids: a word's letters run across
    its tokens until the next token that begins a word. Ids outside the vocabulary (NONE) are skipped."""
    words, letters = [], []
    for t in ids:
        if t == NONE or t >= len(token_letters):
            continue
        if word_start[t] and letters:
            words.append(word_of(letters))
            letters = []
        letters += token_letters[t]
    return [*words, word_of(letters)]


def pause_class(letters: list[int]) -> int:
    """0: the word runs on; 1: it ends a clause (, ; :); 2: a sentence (. ! ?)."""
    last = SYMBOLS[letters[-1]] if letters else ""
    return 2 if last in ".!?" else 1 if last in ",;:" else 0


class PhoneTiming:
    """How long each phoneme of a word lasts, in codec tokens, where nothing was measured (generation): the mean
    measured for that phoneme before that next one (0: the word's end) and that pause class (`pause_class`), else
    for the phoneme at that place in a word, else for the phoneme, else for any (`lm_align.fit_phone_durations`
    fits the table; it travels in the checkpoint's processor config; 2 tokens without one). A clause's last
    phoneme holds its pause."""

    def __init__(self, table: dict[str, float] | None):
        self.table = table or {}

    def durations(self, phones: list[int], letters: list[int]) -> list[float]:
        t = self.table
        return [next((t[k] for k in keys if k in t), 2.0) for keys in word_duration_keys(phones, pause_class(letters))]

    def __call__(self, phones: list[int], letters: list[int]) -> list[float]:
        """Where each phoneme starts, in positions from the word's first code."""
        starts, at = [], 0.0
        for d in self.durations(phones, letters):
            starts.append(at)
            at += d
        return starts


class SpellingTrack:
    """Streaming state: push each position's (text id, speech id), get its spelling row (WIDTH ints). Turns are
    told apart by <|im_start|>; a turn's body starts after the newline that ends its header. With a `phonemizer`
    the rows also hold the word's phonemes."""

    def __init__(self, token_letters: list[list[int]], word_start: list[bool], im_start: int, newline: int,
                 ends: set[int], delay: int, phonemizer: Phonemizer | None = None, timing=None):  # fmt: skip
        self.token_letters, self.word_start = token_letters, word_start
        self.im_start, self.newline, self.ends, self.delay = im_start, newline, ends, delay
        self.phonemizer = phonemizer
        # The phone track (`split_phone_track`): timing(phones, letters) → where each phoneme starts, in positions
        # from the word's first code, where no measured index is pushed (generation). None: no track.
        self.timing = timing
        self.reset()

    def reset(self) -> None:
        self.pos = 0
        self.in_header = False
        self.words: list[tuple[int, list[int]]] = []  # (position of its first token, its letters)
        self.phone = (-1, -1, 0)  # the phone track: (word start, phone index, position where that phone began)
        # The phone track's timing of the word being said, computed once a word: ((start, letters), phoneme starts)
        self.word_timing: tuple = (None, [])

    def state(self) -> tuple:
        """A copy of the state, to come back to (`load`) when a decoder rewinds."""
        return self.pos, self.in_header, [(p, list(w)) for p, w in self.words], self.phone

    def load(self, state: tuple) -> None:
        self.pos, self.in_header, words, self.phone = state
        self.words = [(p, list(w)) for p, w in words]

    def push(self, text_id: int, speech_id: int, phone_index: int = -1) -> list[int]:
        """`phone_index`: the measured index of the phoneme the next code belongs to, in training (-1: none)."""
        p = self.pos
        self.pos += 1
        if text_id == self.im_start:
            self.in_header, self.words = True, []
        elif self.in_header:
            self.in_header = text_id != self.newline
        elif text_id != NONE and text_id not in self.ends:
            letters = self.token_letters[text_id]
            if self.word_start[text_id] or not self.words:
                self.words.append((p, list(letters)))
            elif p <= self.words[-1][0] + self.delay:
                self.words[-1][1].extend(letters)
        row = [0] * WIDTH
        if speech_id == NONE:
            return row
        for start, letters in reversed(self.words):
            if start <= p - self.delay:
                n = len(SYMBOLS)
                for s, c in enumerate(letters[:SLOTS]):
                    row[s] = 1 + s * n + c
                row[SLOTS] = 1 + min(p - self.delay - start, AGES - 1)
                if self.phonemizer is not None:
                    units = len(vocabulary())
                    phones = self.phonemizer(word_of(letters))
                    for s, ph in enumerate(phones[:PHONE_SLOTS]):
                        row[SLOTS + 1 + s] = 1 + s * units + ph - 1
                    if self.timing is not None and phones:
                        row[TRACK_AT:] = self._track(p, start, letters, phones, phone_index)
                break
        return row

    def _track(self, p: int, start: int, letters: list[int], phones: list[int], index: int) -> list[int]:
        """The phone-track columns at position p of the word that began at `start`: the phoneme being said (its
        measured index, else where the timing puts it), the ones before and after it (within the word), and how
        many positions it has lasted."""
        if index < 0:
            if self.word_timing[0] != (start, letters):
                self.word_timing = ((start, list(letters)), self.timing(phones, letters)[1:])
            age = p - self.delay - start
            index = sum(t <= age for t in self.word_timing[1])
        index = min(index, len(phones) - 1)
        if self.phone[:2] != (start, index):
            self.phone = (start, index, p)
        near = [phones[i] if 0 <= i < len(phones) else 0 for i in (index, index - 1, index + 1)]
        return [*near, 1 + min(p - self.phone[2], PHONE_AGES - 1)]


def spelling_ids(track: SpellingTrack, text_ids: torch.Tensor, speech_ids: torch.Tensor,
                 position_ids: torch.Tensor | None = None, phone_index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) grids → (B, T, WIDTH) spelling ids. A packed row holds several examples: where `position_ids`
    restart at 0 the track restarts too. `phone_index` (B, T): measured phone indices (-1: estimate)."""
    B, T = text_ids.shape
    out = torch.zeros(B, T, WIDTH, dtype=torch.long)
    tx, sp = text_ids.tolist(), speech_ids.tolist()
    if track.phonemizer is not None:  # every word of the grids in a few espeak calls, not one call per word
        track.phonemizer.prime(spelled_words(track.token_letters, track.word_start, (t for row in tx for t in row)))
    pos = position_ids.tolist() if position_ids is not None else None
    index = phone_index.tolist() if phone_index is not None else [[-1] * T] * B
    for b in range(B):
        track.reset()
        rows = []
        for t in range(T):
            if pos is not None and pos[b][t] == 0 and t:
                track.reset()
            rows.append(track.push(tx[b][t], sp[b][t], index[b][t]))
        out[b] = torch.tensor(rows)
    return out


class SpellingEmbedding(nn.Module):
    """Spelling ids (…, WIDTH) → (…, H): the sum of per-slot letter embeddings, an age embedding and, with
    `phonemes`, per-slot phoneme embeddings. Zero at the start, so a model gains it without changing what it
    computes."""

    def __init__(self, hidden_size: int, dtype=None, phonemes: bool = False, phone_track: bool = False):
        super().__init__()
        self.letters = nn.Embedding(1 + SLOTS * len(SYMBOLS), hidden_size, padding_idx=0, dtype=dtype)
        self.age = nn.Embedding(1 + AGES, hidden_size, padding_idx=0, dtype=dtype)
        nn.init.zeros_(self.letters.weight)
        nn.init.zeros_(self.age.weight)
        self.phones = None
        if phonemes:
            self.phones = nn.Embedding(1 + PHONE_SLOTS * len(vocabulary()), hidden_size, padding_idx=0, dtype=dtype)
            nn.init.zeros_(self.phones.weight)
        self.track = None
        if phone_track:  # the phone being said, before and after (a table each), and its age
            self.track = nn.Embedding(1 + 3 * (1 + len(vocabulary())) + PHONE_AGES + 1, hidden_size, padding_idx=0,
                                      dtype=dtype)  # fmt: skip
            nn.init.zeros_(self.track.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.letters(ids[..., :SLOTS]).sum(-2) + self.age(ids[..., SLOTS])
        if self.phones is not None:
            out = out + self.phones(ids[..., SLOTS + 1 : TRACK_AT]).sum(-2)
        if self.track is not None:
            n = 1 + len(vocabulary())
            offsets = torch.tensor([1, 1 + n, 1 + 2 * n, 1 + 3 * n], device=ids.device)
            track = ids[..., TRACK_AT:]
            out = out + self.track(torch.where(track > 0, track + offsets, 0)).sum(-2)
        return SCALE * out
