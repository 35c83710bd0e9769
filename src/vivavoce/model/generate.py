"""Speech LM generation: KV-cached incremental decoding with both branches per step, streamed token by token.

A `SpeechSession` holds one conversation's decode state explicitly (moshi-style):

    session = SpeechSession(model, processor)          # system prompt pre-filled once
    session.push(ids)  ...  session.push(ids)           # the user's speech tokens, pre-filled while they talk
    for stream, token in session.respond(GenerationConfig(mode="guided")):
        ...                                             # ("text", id) and ("speech", id) as they come

Modes: "text" — the frozen text branch alone writes the answer (S→T after `push`, T→T after `push_text`; the
session's system prompt says which task: `SpeechSession(mode="s2t")`, or `mode="asr"` for a transcript); "true" —
the speech branch alone speaks the answer (text stream empty); "guided" — the frozen text branch writes the answer
(greedy: the LLM's own answer) and the speech branch speaks it, in the processor's layout: for the word-aligned
layout the text is written first, as a text reply, then the cache is rewound to the reply's start and the words
are laid out at their estimated onsets while the speech branch speaks them; for the "lead" layout text and speech
run together, speech `guided_delay` positions behind. Decoding runs on a `ReferenceDecoder` (the model itself, with
a transformers cache) or a `fastdecode.FastDecoder`; both have `step(text_ids, speech_ids, want_text, want_speech,
text_branch, spelling_ids)` and `truncate(length)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch

from vivavoce.errors import VivavoceError
from vivavoce.model.hearing import carried_codes
from vivavoce.model.processor import ChatTurn, SpeechLMProcessor
from vivavoce.model.speechlm import NONE, SpeechLM
from vivavoce.model.spelling import WIDTH as SPELLING_WIDTH
from vivavoce.model.textgen import SPOKEN_ANSWER_WORDS, answer_complete, penalise

MODES = ("true", "guided", "text")


@dataclass
class GenerationConfig:
    mode: str = "guided"  # true | guided | text
    temperature: float | None = None  # speech sampling; 0 = greedy; None: the checkpoint's (SpeechLM.speech_temperature)
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0  # on speech codes of the last `repetition_window` steps
    repetition_window: int = 16
    text_temperature: float = 0.0  # 0: greedy, the frozen LLM's own answer
    text_repetition_penalty: float = 1.1  # as the cascade's text generation
    min_speech_tokens: int = 4  # codes before end-of-speech is allowed
    max_speech_tokens: int = 750  # 30 s at 25 tokens/s (60 s at 12.5), then end-of-speech is forced
    max_text_tokens: int = 60
    # The written text ends at its first sentence end past this many words (0: at a stop token or max_text_tokens)
    answer_words: int = SPOKEN_ANSWER_WORDS
    # aligned guided mode: end-of-speech is forced this many codes after the last word's first code was due. The
    # training replies end within 45 codes of it in 99 % of cases (25 Hz); a branch that babbles on past its text
    # would otherwise speak until max_speech_tokens. 0 = no such limit.
    guided_tail_tokens: int = 50
    # aligned guided mode on a decoder with lanes (the fast one): speak as soon as the written text reaches this
    # many positions past the speaking position, and write on whenever it falls back to that; 0 = write it all first
    text_lead: int = 12
    seed: int | None = None

    def check(self) -> None:
        if self.mode not in MODES:
            raise VivavoceError(f"generation mode must be true, guided or text, not {self.mode!r}")
        if (self.temperature or 0) < 0 or self.text_temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise VivavoceError("temperatures must be >= 0, top_p in (0, 1], top_k >= 0")
        if not 0 <= self.min_speech_tokens <= self.max_speech_tokens:
            raise VivavoceError("need 0 <= min_speech_tokens <= max_speech_tokens")
        if self.text_lead < 0 or self.guided_tail_tokens < 0:
            raise VivavoceError("text_lead and guided_tail_tokens must be >= 0")


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> int:  # fmt: skip
    """One token id from 1-D logits: greedy at temperature 0, else top-k then nucleus (top-p) sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.scatter(0, order[drop], float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


class ReferenceDecoder:
    """The model itself with a transformers DynamicCache: both branches at every step (the reference path)."""

    def __init__(self, model: SpeechLM):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self.heard_codes: list[int] = []  # a hearing encoder's state: the open user turn's last codes

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def truncate(self, length: int) -> None:
        extra = self.cache.get_seq_length() - length
        if extra > 0:  # transformers 5 crops by a negative count of tokens to drop, not to a length
            self.cache.crop(-extra)

    @torch.inference_mode()
    def step(self, text_ids, speech_ids=None, want_text: bool = True, want_speech: bool = True, text_branch=None,
             spelling_ids=None, heard=None):  # fmt: skip
        t = torch.tensor([list(text_ids)])
        s = torch.tensor([list(speech_ids)]) if speech_ids is not None else torch.full_like(t, NONE)
        sp = torch.tensor([spelling_ids]) if spelling_ids is not None else None
        h = torch.tensor([list(heard)], dtype=torch.bool) if heard is not None else None
        before = [self.heard_codes]
        if self.model.speech_hearing is not None and h is not None:
            keep = self.model.speech_hearing.receptive_field - 1
            mask = self.model.hearing_mask(t, s, self.cache, h)[0].tolist()
            self.heard_codes = carried_codes(self.heard_codes, s[0].tolist(), mask, keep)
        out = self.model(t, s, cache=self.cache, use_cache=True, logits_to_keep=1, spelling_ids=sp,
                         heard=h, heard_before=before)  # both branches
        tl = out.text_logits[0, -1].float() if want_text else None
        sl = out.speech_logits[0, -1].float() if want_speech else None
        return tl, sl


class SpeechSession:
    """One conversation's decode state: the cache (system prompt first), the open turn, what is left to feed."""

    def __init__(self, model: SpeechLM, processor: SpeechLMProcessor, decoder=None, mode: str = "s2s",
                 system: str | None = None, keep_text_cache: bool = True):  # fmt: skip
        self.model, self.proc = model, processor
        self.decoder = decoder if decoder is not None else ReferenceDecoder(model)
        # False: a reply skips the text branch's layers once no more text is wanted (all of a true-mode reply; a
        # later turn's text then misses those positions: fine for one-turn engines). Pre-fill runs both branches.
        self.keep_text_cache = keep_text_cache
        self._pending: list[tuple[int, int]] = []  # positions to feed before the next turn (a reply's closing)
        self._user_open: str | None = None  # "speech" | "text" while a user turn is being pushed
        # The speech branch's spelling input (models with split_spelling) follows the positions as they are fed.
        c = model.config
        self.track = processor.spelling_track(c.split_phonemes, c.split_phone_track) if c.split_spelling else None
        turn = ChatTurn("system", text=system) if system else processor.system_turn(mode)
        grid = processor.encode([turn])
        self._feed(grid.text_ids, grid.speech_ids, want_text=False, want_speech=False)
        self.prefix_length = self.decoder.length
        self._prefix_track = self.track.state() if self.track is not None else None

    @property
    def length(self) -> int:
        return self.decoder.length + len(self._pending)

    def reset(self) -> None:
        """Forget the conversation after the system prompt (the prompt's cache is kept)."""
        self.decoder.truncate(self.prefix_length)
        self._pending, self._user_open = [], None
        if self.track is not None:
            self.track.load(self._prefix_track)

    def _feed(self, text_ids, speech_ids, want_text=True, want_speech=True, text_branch=True, lane: bool = True,
              heard: bool = False):  # fmt: skip
        """Decode more positions. `lane` False: positions the conversation will not keep (guided mode's text lane,
        rewound before the speech is spoken over them): the spelling track does not advance over them. `heard`:
        these positions' codes are the user's (not a pending reply's closing)."""
        said = [heard] * len(text_ids)
        if self._pending:
            pt, ps = zip(*self._pending)
            text_ids, speech_ids, said = [*pt, *text_ids], [*ps, *speech_ids], [False] * len(pt) + said
            self._pending = []
        spelling = None
        if self.track is not None:
            if lane:
                spelling = [self.track.push(t, s) for t, s in zip(text_ids, speech_ids)]
            else:
                spelling = [[0] * SPELLING_WIDTH for _ in text_ids]
        return self.decoder.step(text_ids, speech_ids, want_text, want_speech, text_branch=text_branch or want_text,
                                 spelling_ids=spelling, heard=said)  # fmt: skip

    def _open_user(self, kind: str) -> None:
        if self._user_open == kind:
            return
        if self._user_open is not None:
            raise VivavoceError(f"a {self._user_open} user turn is open; answer it before a {kind} one")
        header = self.proc.header_ids("user")
        text, speech = list(header), [NONE] * len(header)
        if kind == "speech":
            text.append(NONE)
            speech.append(self.proc.sos)
        self._feed(text, speech, want_text=False, want_speech=False, heard=True)
        self._user_open = kind

    def push(self, ids) -> None:
        """Pre-fill more of the user's speech tokens (codec ids) while the user is still talking."""
        ids = [int(i) for i in ids]
        if any(not 0 <= i < self.model.config.speech_vocab for i in ids):
            raise VivavoceError(f"speech ids must lie in 0..{self.model.config.speech_vocab - 1}")
        self._open_user("speech")
        if ids:
            self._feed([NONE] * len(ids), ids, want_text=False, want_speech=False, heard=True)

    def push_text(self, text: str) -> None:
        """A written user turn (T→S, T→T)."""
        self._open_user("text")
        ids = self.proc.text_ids(text)
        self._feed(ids, [NONE] * len(ids), want_text=False, want_speech=False)

    def respond(self, config: GenerationConfig | None = None, text: str | None = None) -> Iterator[tuple[str, int]]:
        """Close the user's turn and generate the reply: yields ("text", id) and ("speech", code) as they come,
        until end-of-speech (text mode: the text's end) or a length limit. Closing it early (`gen.close()`) leaves
        the session usable. `text` (guided mode): the words to speak, given instead of written by the text branch."""
        config = config or GenerationConfig()
        config.check()
        if config.temperature is None:
            config = replace(config, temperature=self.model.speech_temperature)
        if self._user_open is None:
            raise VivavoceError("nothing to answer: push the user's speech (or text) first")
        proc = self.proc
        close = ([NONE], [proc.eos]) if self._user_open == "speech" else ([], [])
        tail = [proc.im_end, *proc.newline, *proc.header_ids("assistant")]
        self._user_open = None
        guided = config.mode == "guided"
        aligned = guided and proc.config.guided_layout == "aligned"
        if text is not None and not guided:
            raise VivavoceError("a given text is spoken in guided mode only")
        given = None if text is None else proc.text_ids(text)
        wants_text = guided or config.mode == "text"
        tl, sl = self._feed([*close[0], *tail], [*close[1], *[NONE] * len(tail)], want_text=wants_text, heard=True)
        gen = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        if config.mode == "text":
            yield from self._respond_text(config, tl, gen)
        elif aligned:
            yield from self._respond_aligned(config, tl, gen, given)
        else:
            yield from self._respond_lead(config, tl, sl, gen, given)

    def _next_text(self, config: GenerationConfig, tl, texts: list[int], gen) -> int | None:
        """The text branch's next token, or None at its end (a stop token, the length limit, or a sentence end past
        answer_words)."""
        if config.answer_words and texts and answer_complete(self.proc.decode_text(texts), config.answer_words):
            return None
        tok = sample(penalise(tl, texts, config.text_repetition_penalty), config.text_temperature, 0, 1.0, gen)
        return None if tok in self.proc.stop_ids or len(texts) >= config.max_text_tokens else tok

    def _next_speech(self, config: GenerationConfig, sl, codes: list[int], gen, may_end: bool = True,
                     limit: int | None = None) -> int:
        """The next code, or end-of-speech once `codes` reach max_speech_tokens (or a tighter `limit`)."""
        cfg = self.model.config
        cap = config.max_speech_tokens if limit is None else min(limit, config.max_speech_tokens)
        if len(codes) >= cap:
            return cfg.eos
        logits = penalise(sl, codes[-config.repetition_window :], config.repetition_penalty).clone()
        logits[cfg.sos] = float("-inf")
        if len(codes) < config.min_speech_tokens or not may_end:
            logits[cfg.eos] = float("-inf")
        return sample(logits, config.temperature, config.top_k, config.top_p, gen)

    def _respond_text(self, config: GenerationConfig, tl, gen):
        """A written reply, no speech span: text tokens until `_next_text` ends it (a stop token, max_text_tokens or
        a sentence end past answer_words)."""
        texts: list[int] = []
        try:
            while (tok := self._next_text(config, tl, texts, gen)) is not None:
                texts.append(tok)
                yield "text", tok
                tl, _ = self._feed([tok], [NONE], want_speech=False)
        finally:  # the turn's closing is fed with the next turn, however this one ended
            self._pending = [(self.proc.im_end, NONE), *[(n, NONE) for n in self.proc.newline]]

    def _close_reply(self, last_text: int) -> None:
        """The end of speech and the turn's closing are fed with the next turn (no need to wait for them now)."""
        proc = self.proc
        self._pending = [(last_text, proc.eos), (proc.im_end, NONE), *[(n, NONE) for n in proc.newline]]

    def _respond_aligned(self, config: GenerationConfig, tl, gen, given: list[int] | None):
        """The text reply, then the same words again from the reply's start, each at its estimated onset, with the
        speech. On a decoder with lanes (`save`/`restore`) the two interleave: the text lane writes only as far as
        the speaking needs (`text_lead` positions ahead) and is put aside while the speech lane speaks over the same
        positions, so the first audio waits for a few words, not for the whole answer. Both lanes see exactly what
        they would see one after the other."""
        proc, dec = self.proc, self.decoder
        start = dec.length
        delay, codes, i, sl = proc.config.guided_delay, [], 0, None
        texts: list[int] = list(given or [])
        lanes = given is None and config.text_lead > 0 and hasattr(dec, "save")
        done = not lanes
        text_lane = speech_lane = None
        try:
            for tok in texts:
                yield "text", tok
            if given is None and not lanes:
                while (tok := self._next_text(config, tl, texts, gen)) is not None:  # the text reply, in a row
                    texts.append(tok)
                    yield "text", tok
                    tl, _ = self._feed([tok], [NONE], want_speech=False, lane=False)
                dec.truncate(start)  # rewind: the same words again, each at its onset
            at = dict(zip(proc.aligned_positions(texts), texts))
            while True:
                if not done and max(at, default=-1) < i + config.text_lead:  # the text lane writes on
                    # it writes one position a token, so it overwrites at most the first max_text_tokens positions
                    if i > 0:
                        speech_lane = dec.save(start, start + min(i, config.max_text_tokens))
                    if text_lane is not None:
                        dec.restore(text_lane, start)
                    while max(at, default=-1) < i + config.text_lead:
                        tok = self._next_text(config, tl, texts, gen)
                        if tok is None:
                            done = True
                            break
                        texts.append(tok)
                        yield "text", tok
                        tl, _ = self._feed([tok], [NONE], want_speech=False, lane=False)
                        at = dict(zip(proc.aligned_positions(texts), texts))
                    text_lane = dec.save(start, start + len(texts))
                    if speech_lane is not None:
                        dec.restore(speech_lane, start, length=start + i)
                    else:
                        dec.truncate(start)
                # No end of speech before the last word has been read and its first code is due: the branch cannot
                # see how much text is still to come (it learnt the lengths of its training sentences).
                last_word = max(at, default=-1) + delay
                t = at.get(i, NONE)
                if i < delay:
                    s = NONE
                elif i == delay:
                    s = proc.sos
                else:
                    tail = config.guided_tail_tokens  # codes up to the last word's onset, then this many
                    limit = max(at, default=-1) + tail if done and tail > 0 else None
                    s = self._next_speech(config, sl, codes, gen, may_end=done and i > last_word, limit=limit)
                    if s == proc.eos:
                        self._close_reply(t)
                        return
                    codes.append(s)
                    yield "speech", s
                _, sl = self._feed([t], [s], want_text=False, text_branch=self.keep_text_cache)
                i += 1
        finally:
            if not self._pending:  # stopped early (closed, or an error): end the spoken turn all the same
                self._close_reply(NONE)

    def _respond_lead(self, config: GenerationConfig, tl, sl, gen, given: list[int] | None):
        proc = self.proc
        guided = config.mode == "guided"
        delay = proc.config.guided_delay
        text_done, started = not guided, False
        texts: list[int] = []
        codes: list[int] = []
        i = 0
        try:
            while True:
                t = NONE
                if not text_done:
                    if given is not None:
                        tok = given[len(texts)] if len(texts) < len(given) else None
                    else:
                        tok = self._next_text(config, tl, texts, gen)
                    if tok is None:
                        text_done = True
                    else:
                        t = tok
                        texts.append(tok)
                        yield "text", tok
                if not started:
                    started = not guided or i >= delay or text_done
                    s = proc.sos if started else NONE
                else:
                    s = self._next_speech(config, sl, codes, gen)
                    if s == proc.eos:
                        self._close_reply(t)
                        return
                    codes.append(s)
                    yield "speech", s
                more_text = not text_done
                tl, sl = self._feed([t], [s], want_text=more_text, text_branch=self.keep_text_cache or more_text)
                i += 1
        finally:
            if not self._pending:  # stopped early (closed, or an error): end the spoken turn all the same
                self._close_reply(NONE)


def written_reply(session: SpeechSession, speech_ids, max_tokens: int) -> str:
    """The text branch's plain argmax reply (no repetition penalty, no sentence stop) to one spoken user turn, from
    the session's system prompt: a diagnostic of what it hears (`mode="asr"`) or answers (`mode="s2t"`)."""
    session.reset()
    session.push(speech_ids)
    config = GenerationConfig(mode="text", text_repetition_penalty=1.0, answer_words=0, max_text_tokens=max_tokens)
    return session.proc.decode_text([tok for _, tok in session.respond(config)]).strip()
