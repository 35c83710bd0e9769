"""Conversations (text and/or speech) ⇄ the speech LM's token grid: two aligned streams, one (text, speech) pair
per position, with per-stream targets for training and batching with padding.

Layout (ChatML; `·` = NONE, no token in that stream; S/E = start/end of speech):

    text   <|im_start|> user \\n  ·  ·  ·  ·  · <|im_end|> \\n <|im_start|> assistant \\n  t1 t2 t3 t4 t5 ·  ·  ·  ·  · <|im_end|> \\n
    speech      ·       ·    ·   S  u1 u2 u3 E     ·      ·      ·          ·      ·   ·  ·  ·  ·  S  a1 a2 a3 E    ·      ·

- Template tokens and text turns: text stream only.
- A spoken user turn: its speech span (S codes E) in the speech stream, text stream empty (its transcript, if any,
  is not placed; an alignment task puts it in the assistant's reply instead).
- A spoken assistant reply without text ("true" mode): the same, speech only.
- A spoken assistant reply with text ("text-guided"), word-aligned layout (`guided_layout: aligned`, the
  default; Moshi's inner monologue): each word's text tokens sit at the position where the word's speech starts
  (its onset, in codec tokens; measured by forced alignment for training, `train/lm_align.py`, else estimated from
  the text by `estimate_onsets`), and the speech span starts `guided_delay` positions after the reply's start, so
  each word is read `guided_delay` positions before its first code is due. The speech branch then needs only the
  word it is saying, a few positions back (guided_delay 2 here):

      text   t1 ·  ·  t2 t3 ·  ·  ·  t4 ·  ·  ·  ·  ·  ·
      speech ·  ·  S  a1 a2 a3 a4 a5 a6 a7 a8 a9 E

- The older "lead" layout (`guided_layout: lead`): the text tokens fill the text stream from the reply's first
  position; the speech span starts `guided_delay` positions later (or right after a shorter text) and runs on, the
  text stream empty once the text is done. Text leads: speech is ~4 positions a word, text one, so the text is
  soon far ahead of the speech.

Targets (what the position's logits should predict; IGNORE elsewhere), only in trained turns (assistant by default):
text targets for a text reply's tokens and its <|im_end|>; for a guided reply's text tokens (each at the position
of the text token before it, wherever that is), and <|im_end|> after its last one (the frozen LM's own end-of-text
signal); speech targets for S, the codes and E of a spoken reply. The closing "<|im_end|>\\n" of a spoken reply is not trained: the generator
writes it. Modes (S→S, S→T, T→S, T→T) are chosen by the system prompt, as in MOSS-Speech.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from vivavoce.errors import VivavoceError
from vivavoce.model.speechlm import IGNORE, NONE, SpeechLMConfig, tokenizer_id
from vivavoce.model.textgen import SPOKEN_STYLE_PROMPT

MODE_PROMPTS = {
    # The speech-answer modes use the frozen LLM's own spoken-style prompt, unchanged: guided mode then writes the
    # very answer the corpus recorded for the question (an extra sentence here changed 6 of 6 test answers). The
    # layout forces the modality anyway; the input (speech or text) tells S→S from T→S.
    "s2s": SPOKEN_STYLE_PROMPT,
    "s2t": SPOKEN_STYLE_PROMPT + " The user speaks to you; answer in text.",
    "t2s": SPOKEN_STYLE_PROMPT,
    "t2t": SPOKEN_STYLE_PROMPT + " The user writes to you; answer in text.",
}
# Alignment tasks (MOSS-Speech trains on both directions): their own system prompts.
TASK_PROMPTS = {
    "asr": "Write down exactly what the user says.",
    "tts": "Read the user's text aloud, word for word.",
}
ROLES = ("system", "user", "assistant")
LAYOUTS = ("aligned", "lead")
SPEAKABLE = re.compile(r"[A-Za-z0-9]")  # a word with none of these is not spoken (a lone dash)


@dataclass
class ChatTurn:
    """One turn. `speech`: codec ids (0..speech_vocab-1); or `audio` (16 kHz float32), encoded with the codec
    given to `encode`. A user turn with speech is spoken (its text is not placed); an assistant turn with both text
    and speech is a text-guided spoken reply."""

    role: str
    text: str | None = None
    speech: list[int] | None = None
    audio: np.ndarray | None = None
    # Guided replies, aligned layout: per text token, the codec token where its word starts (None on a word's
    # later tokens). Measured onsets for training; None: estimated from the text.
    onsets: list[int | None] | None = None
    # And per text token, the codec tokens where each phoneme of its word starts (`lm_align.word_onsets`): the
    # speech branch's phone track in training (`split_phone_track`); None: estimated.
    phone_onsets: list[list[int] | None] | None = None

    @property
    def spoken(self) -> bool:
        return self.speech is not None or self.audio is not None


@dataclass
class ProcessorConfig:
    guided_layout: str = "aligned"  # aligned | lead (see the module docstring)
    # aligned: positions from the reply's start to its S, so each word is read this many positions early; lead:
    # positions from the first text token to S (at most the text's length)
    guided_delay: int = 4
    # Onset estimate of the aligned layout where none is measured (generation): a word lasts onset_per_word +
    # onset_per_char x its letters + onset_pause if it ends a clause, in codec tokens. Fitted to forced alignments
    # of the training speech by `lm_align.fit_onset_rule`; these defaults are that fit for Piper joe at 25 Hz.
    onset_first: float = 0.0
    onset_per_word: float = 2.18
    onset_per_char: float = 1.14
    onset_pause: float = 10.1
    # Models with the phone track (`split_phone_track`): means of measured phoneme durations in codec tokens
    # (`spelling.PhoneTiming`, fitted by `lm_align.fit_phone_durations`); the words' onsets are then the sums of
    # their phonemes' durations instead of the rule above.
    phone_tokens: dict[str, float] | None = None
    train_roles: tuple[str, ...] = ("assistant",)
    max_len: int | None = None  # longer conversations are refused (VivavoceError)

    @classmethod
    def layout_of(cls, saved: dict | None) -> "ProcessorConfig":
        """The layout a checkpoint was trained with (its metadata's "processor"); checkpoints from before the
        aligned layout name none and were trained with the lead layout."""
        saved = {"guided_layout": "lead", **(saved or {})}
        layout = set(cls.__dataclass_fields__) - {"train_roles", "max_len"}  # what decoding must match
        return cls(**{k: v for k, v in saved.items() if k in layout})


@dataclass
class Grid:
    """One conversation as aligned streams (lists of equal length)."""

    text_ids: list[int] = field(default_factory=list)
    speech_ids: list[int] = field(default_factory=list)
    text_targets: list[int] = field(default_factory=list)
    speech_targets: list[int] = field(default_factory=list)
    # Guided replies with measured phone onsets: at each position, which phoneme of the word being said the next
    # code belongs to (its index in the word); -1 elsewhere (the spelling track then estimates it).
    phone_index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.text_ids)

    def add(self, text: int = NONE, speech: int = NONE) -> int:
        self.text_ids.append(text)
        self.speech_ids.append(speech)
        self.text_targets.append(IGNORE)
        self.speech_targets.append(IGNORE)
        self.phone_index.append(-1)
        return len(self.text_ids) - 1

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, T) text ids and speech ids, for the model."""
        return torch.tensor([self.text_ids]), torch.tensor([self.speech_ids])


@dataclass
class Batch:
    """Right-padded (B, T) tensors. Targets are aligned with their positions (already shifted): the logits at
    position p are scored against targets[p]."""

    text_ids: torch.Tensor
    speech_ids: torch.Tensor
    text_targets: torch.Tensor
    speech_targets: torch.Tensor
    attention_mask: torch.Tensor  # 1 on real positions, 0 on padding

    @property
    def text_loss_mask(self) -> torch.Tensor:
        return self.text_targets != IGNORE

    @property
    def speech_loss_mask(self) -> torch.Tensor:
        return self.speech_targets != IGNORE

    def to(self, device) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class SpeechLMProcessor:
    def __init__(self, tokenizer, model_config: SpeechLMConfig | None = None, config: ProcessorConfig | None = None):
        self.tokenizer = tokenizer
        self.model_config = model_config or SpeechLMConfig()
        self.config = config or ProcessorConfig()
        self.sos, self.eos = self.model_config.sos, self.model_config.eos
        self.im_start, self.im_end = (tokenizer_id(tokenizer, t) for t in ("<|im_start|>", "<|im_end|>"))
        self.newline = self.text_ids("\n")
        self.role_ids = {role: self.text_ids(role) for role in ROLES}
        self.stop_ids = sorted({self.im_end, tokenizer.eos_token_id} - {None})  # end of a text reply
        if self.config.guided_layout not in LAYOUTS:
            raise VivavoceError(f"guided_layout must be aligned or lead, not {self.config.guided_layout!r}")

    def header_ids(self, role: str) -> list[int]:
        """Text ids that open a turn: <|im_start|>role\\n."""
        return [self.im_start, *self.role_ids[role], *self.newline]

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    @staticmethod
    def system_turn(mode: str) -> ChatTurn:
        prompt = MODE_PROMPTS.get(mode) or TASK_PROMPTS.get(mode)
        if prompt is None:
            raise VivavoceError(f"unknown mode {mode!r}; choose from {', '.join([*MODE_PROMPTS, *TASK_PROMPTS])}")
        return ChatTurn("system", text=prompt)

    # ---- conversation → grid -----------------------------------------------------------------------------------

    def encode(
        self, turns: list[ChatTurn], mode: str | None = None, add_generation_prompt: bool = False, codec=None
    ) -> Grid:
        """The grid of `turns`; `mode` prepends that mode's system prompt when the turns have no system turn;
        `add_generation_prompt` ends with "<|im_start|>assistant\\n" (for generation)."""
        if mode is not None and not (turns and turns[0].role == "system"):
            turns = [self.system_turn(mode), *turns]
        g = Grid()
        for turn in turns:
            if turn.role not in ROLES:
                raise VivavoceError(f"turn role must be one of {', '.join(ROLES)}, not {turn.role!r}")
            train = turn.role in self.config.train_roles
            self._header(g, turn.role)
            speech = self._speech_of(turn, codec)
            text = self.text_ids(turn.text) if turn.text else []
            if speech is not None and turn.role == "assistant" and text:
                if self.config.guided_layout == "aligned":
                    self._guided_aligned(g, text, speech, turn.onsets, train, turn.phone_onsets)
                else:
                    self._guided(g, text, speech, train)
                self._text(g, [self.im_end], train=False)
            elif speech is not None:
                self._speech_span(g, speech, train)
                self._text(g, [self.im_end], train=False)
            else:
                if not text and turn.role != "system":
                    raise VivavoceError(f"a {turn.role} turn has neither text nor speech")
                self._text(g, text + [self.im_end], train)
            self._text(g, self.newline, train=False)
        if add_generation_prompt:
            self._header(g, "assistant")
        if self.config.max_len is not None and len(g) > self.config.max_len:
            raise VivavoceError(f"conversation is {len(g)} positions long; the limit is {self.config.max_len}")
        return g

    def _speech_of(self, turn: ChatTurn, codec) -> list[int] | None:
        if turn.speech is not None:
            ids = [int(i) for i in turn.speech]
        elif turn.audio is not None:
            if codec is None:
                raise VivavoceError("a turn holds audio but no codec was given to encode it")
            ids = [int(i) for i in codec.encode(turn.audio)]
        else:
            return None
        bad = [i for i in ids if not 0 <= i < self.model_config.speech_vocab]
        if bad:
            raise VivavoceError(f"speech id {bad[0]} is outside 0..{self.model_config.speech_vocab - 1}")
        return ids

    def _header(self, g: Grid, role: str) -> None:
        for t in self.header_ids(role):
            g.add(text=t)

    def _text(self, g: Grid, ids: list[int], train: bool) -> None:
        for t in ids:
            p = g.add(text=t)
            if train and p > 0:
                g.text_targets[p - 1] = t

    def _speech_span(self, g: Grid, codes: list[int], train: bool) -> None:
        for s in [self.sos, *codes, self.eos]:
            p = g.add(speech=s)
            if train and p > 0:
                g.speech_targets[p - 1] = s

    def _guided(self, g: Grid, text: list[int], codes: list[int], train: bool) -> None:
        start = len(g)
        speech = [self.sos, *codes, self.eos]
        delay = min(self.config.guided_delay, len(text))  # a short text: speech starts right after it
        for i in range(max(len(text), delay + len(speech))):
            t = text[i] if i < len(text) else NONE
            s = speech[i - delay] if 0 <= i - delay < len(speech) else NONE
            p = g.add(text=t, speech=s)
            if train:
                if t != NONE:
                    g.text_targets[p - 1] = t
                if s != NONE:
                    g.speech_targets[p - 1] = s
        if train:
            g.text_targets[start + len(text) - 1] = self.im_end  # end of text: the generator stops feeding text

    def words(self, text_ids: list[int]) -> list[tuple[int, str]]:
        """(first token index, text) of each word: a word starts at the first token and at each token whose text
        begins with a space (the backbone's byte-level BPE)."""
        pieces = [self.tokenizer.decode([t]) for t in text_ids]
        starts = [i for i, p in enumerate(pieces) if i == 0 or p[:1].isspace()]
        ends = [*starts[1:], len(text_ids)]
        return [(a, self.tokenizer.decode(text_ids[a:b]).strip()) for a, b in zip(starts, ends)]

    def estimate_onsets(self, text_ids: list[int]) -> list[int | None]:
        """Onsets (codec tokens) of the words of `text_ids` from their letters and punctuation alone (the config's
        onset_* rate constants): the aligned layout where no alignment is measured, as in generation."""
        c = self.config
        out: list[int | None] = [None] * len(text_ids)
        at = c.onset_first
        for a, word in self.words(text_ids):
            if SPEAKABLE.search(word):
                out[a] = int(round(at))
                if self.model_config.split_phone_track:  # as long as the phone track's phonemes last
                    at += sum(self.phone_timing.durations(*self.phones_of(word)))
                else:
                    at += c.onset_per_word + c.onset_per_char * len(SPEAKABLE.findall(word)) + c.onset_pause * (
                        word[-1:] in ",.;:!?")
        return out

    @property
    def phone_timing(self):
        """The phone track's durations where none are measured (a fitted table may replace the config's)."""
        from vivavoce.model.spelling import PhoneTiming

        return PhoneTiming(self.config.phone_tokens)

    def phones_of(self, word: str) -> tuple[list[int], list[int]]:
        """A word's phonemes (as the spelling input sees them) and its letters."""
        from vivavoce.model.spelling import letters_of, word_of

        letters = letters_of(word)
        return self.phonemizer(word_of(letters)), letters

    def prime_phonemes(self, words) -> None:
        """Phonemise many words in a few espeak-ng calls (`Phonemizer.prime`) before `phones_of` asks for them one
        by one (a call each: ~10 ms a word)."""
        from vivavoce.model.spelling import letters_of, word_of

        self.phonemizer.prime([word_of(letters_of(w)) for w in words])

    def aligned_positions(self, text_ids: list[int], onsets: list[int | None] | None = None) -> list[int]:
        """Positions (from the reply's start) of the text tokens in the aligned layout: each word at its onset, its
        later tokens right after it, never two on one position; `onsets` None (or of another length): estimated."""
        if onsets is None or len(onsets) != len(text_ids):
            onsets = self.estimate_onsets(text_ids)
        pos, prev = [], -1
        for o in onsets:
            prev = max(int(o), prev + 1) if o is not None else prev + 1
            pos.append(prev)
        return pos

    def _guided_aligned(self, g: Grid, text: list[int], codes: list[int], onsets, train: bool,
                        phone_onsets=None) -> None:  # fmt: skip
        start = len(g)
        speech = [self.sos, *codes, self.eos]
        delay = self.config.guided_delay
        pos = self.aligned_positions(text, onsets)
        at = dict(zip(pos, text))
        for i in range(max(pos[-1] + 1, delay + len(speech))):
            s = speech[i - delay] if 0 <= i - delay < len(speech) else NONE
            p = g.add(text=at.get(i, NONE), speech=s)
            if train and s != NONE:
                g.speech_targets[p - 1] = s
        if phone_onsets is not None and len(phone_onsets) == len(text) and onsets is not None:
            # The position holding code j's logits is delay positions after the reply's j-th; the word being said
            # there is the last whose first token sits at or before j (as the spelling track finds it).
            words = [(q, ph) for q, ph in zip(pos, phone_onsets) if ph]
            w = -1
            for j in range(len(codes)):
                while w + 1 < len(words) and words[w + 1][0] <= j:
                    w += 1
                if w >= 0:
                    g.phone_index[start + j + delay] = max(0, sum(o <= j for o in words[w][1]) - 1)
        if train:  # each text token is predicted where the one before it sits (the first: at the header's end)
            for before, t in zip([start - 1, *(start + q for q in pos)], [*text, self.im_end]):
                g.text_targets[before] = t

    # ---- the speech branch's spelling input (`model/spelling.py`) ------------------------------------------------

    @cached_property
    def _token_spelling(self) -> tuple[list[list[int]], list[bool]]:
        """Per vocabulary token: its letters (spelling symbols) and whether it begins a word."""
        from vivavoce.model.spelling import letters_of

        # Byte-level BPE: a token that begins a word begins with a (mapped) space, newline or tab byte.
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        return [letters_of(p or "") for p in pieces], [bool(p) and p[0] in "ĠĊĉ" for p in pieces]

    @cached_property
    def phonemizer(self):
        """The words' phonemes for the spelling input (`split_phonemes`), remembered across tracks."""
        from vivavoce.model.spelling import Phonemizer

        return Phonemizer()

    def spelling_track(self, phonemes: bool = False, phone_track: bool = False):
        """A fresh streaming spelling tracker for this layout (aligned guided replies; the word lead is the delay);
        `phonemes`: its rows also hold the words' phonemes (models with split_phonemes); `phone_track`: and the
        phone track (split_phone_track)."""
        from vivavoce.model.spelling import SpellingTrack

        if self.config.guided_layout != "aligned":
            raise VivavoceError("the spelling input follows the aligned guided layout; this layout is lead")
        letters, word_start = self._token_spelling
        return SpellingTrack(letters, word_start, self.im_start, self.newline[0], {self.im_end, *self.stop_ids},
                             self.config.guided_delay, self.phonemizer if phonemes else None,
                             self.phone_timing if phone_track else None)  # fmt: skip

    def spelling_ids(self, text_ids: torch.Tensor, speech_ids: torch.Tensor,
                     position_ids: torch.Tensor | None = None, phonemes: bool = False, phone_track: bool = False,
                     phone_index: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """(B, T) grids (packed rows: with their position ids) → (B, T, WIDTH) spelling ids; `phone_index` (B, T):
        the grids' measured phone indices (`Grid.phone_index`), for the phone track (`phone_track`)."""
        from vivavoce.model.spelling import spelling_ids

        return spelling_ids(self.spelling_track(phonemes, phone_track), text_ids, speech_ids, position_ids,
                            phone_index)

    # ---- grid → conversation -----------------------------------------------------------------------------------

    def decode(self, grid: Grid) -> list[ChatTurn]:
        """The turns of a grid (text decoded, speech as ids). A final turn left open (a generation prompt, or a
        reply cut short) is returned with what it holds."""
        turns: list[ChatTurn] = []
        i, n = 0, len(grid)
        tx, sp = grid.text_ids, grid.speech_ids
        while i < n:
            if tx[i] != self.im_start:
                raise VivavoceError(f"position {i}: expected <|im_start|>, found text id {tx[i]}")
            j = i + 1
            while j < n and tx[j] != self.newline[0]:
                j += 1
            role = self.tokenizer.decode(tx[i + 1 : j]).strip()
            i = j + 1
            text, speech, in_speech = [], None, False
            while i < n and tx[i] != self.im_end:
                if tx[i] != NONE:
                    text.append(tx[i])
                s = sp[i]
                if s == self.sos:
                    speech, in_speech = [], True
                elif s == self.eos:
                    in_speech = False
                elif s != NONE and in_speech:
                    speech.append(s)
                i += 1
            turns.append(ChatTurn(role, text=self.decode_text(text) if text else None, speech=speech))
            i += 1 + len(self.newline)  # <|im_end|> \n
        return turns

    def decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ---- batching ------------------------------------------------------------------------------------------------

    def collate(self, grids: list[Grid], pad_to_multiple: int = 1) -> Batch:
        """Right-padded batch; padding has NONE ids, IGNORE targets and attention_mask 0."""
        if not grids:
            raise VivavoceError("cannot batch zero conversations")
        T = max(len(g) for g in grids)
        T = -(-T // pad_to_multiple) * pad_to_multiple
        B = len(grids)
        text = torch.full((B, T), NONE, dtype=torch.long)
        speech = torch.full((B, T), NONE, dtype=torch.long)
        tt = torch.full((B, T), IGNORE, dtype=torch.long)
        st = torch.full((B, T), IGNORE, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        for b, g in enumerate(grids):
            n = len(g)
            text[b, :n] = torch.tensor(g.text_ids)
            speech[b, :n] = torch.tensor(g.speech_ids)
            tt[b, :n] = torch.tensor(g.text_targets)
            st[b, :n] = torch.tensor(g.speech_targets)
            mask[b, :n] = 1
        return Batch(text, speech, tt, st, mask)
