"""The cascaded baseline: Silero VAD trim -> Whisper tiny.en -> SmolLM2 chat -> Piper (joe voice).

It is the reference the true speech-to-speech model must beat, and a fallback. Text streams token by token and
each finished sentence (or long clause) is spoken at once, so first audio comes after the first clause, not the
whole answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from vivavoce.audio.vad import trim_to_speech
from vivavoce.engine.base import AudioChunk, ResponseOptions, TextDelta, Turn, UserTranscript
from vivavoce.model.backbone import BackboneConfig, load_backbone
from vivavoce.model.textgen import (
    SPOKEN_ANSWER_WORDS,
    SPOKEN_STYLE_PROMPT,
    PrefixCache,
    TextGenConfig,
    chat_messages,
    stream_text,
    system_prefix_ids,
)
from vivavoce.speechtools.asr import WhisperASR
from vivavoce.speechtools.tts import PiperSettings, PiperTTS
from vivavoce.textnorm import SENTENCE_END

NOT_HEARD = "Sorry, I did not catch that. Could you say it again?"
_SPEAKABLE_END = re.compile(SENTENCE_END + r"(?=\s)|[;:](?=\s)|\n")  # a sentence or clause ends
_MARKUP = re.compile(r"[*_#`>|~]+|^\s*[-•]\s+|\[|\]|\(https?://\S+\)", re.M)


@dataclass
class CascadeConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(dtype="bfloat16"))
    system_prompt: str = SPOKEN_STYLE_PROMPT
    max_answer_tokens: int = 60
    # Stop at the first sentence end past this many words (0: run to the token limit, often mid-sentence).
    answer_words: int = SPOKEN_ANSWER_WORDS
    # Speak a clause early once it has this many words and ends in a comma: cuts time to first audio.
    first_clause_words: int = 6


def speakable(text: str) -> str:
    """Text as a voice would say it: markdown and list marks gone, whitespace collapsed."""
    return " ".join(_MARKUP.sub(" ", text).split())


class CascadeEngine:
    name = "cascade"

    def __init__(self, config: CascadeConfig | None = None):
        self.config = config or CascadeConfig()
        self.backbone = load_backbone(self.config.backbone)
        self.asr = WhisperASR()
        self.tts = PiperTTS()
        self.sample_rate = 22050
        self.prefix = PrefixCache(self.backbone, system_prefix_ids(self.backbone, self.config.system_prompt))
        self._warm_up()

    def _warm_up(self) -> None:
        """Start Piper's process and run the LLM once, so the first user does not pay for it."""
        self.tts.synthesize("Hello.", PiperSettings())
        list(stream_text(self.backbone, self.backbone.chat_ids(chat_messages("Hi.")), TextGenConfig(max_new_tokens=2)))

    def transcribe(self, audio: np.ndarray) -> str:
        speech = trim_to_speech(audio)
        return self.asr.transcribe(speech) if speech.size else ""

    def respond(
        self, audio: np.ndarray, history: list[Turn] | None = None, options: ResponseOptions | None = None
    ) -> Iterator[UserTranscript | TextDelta | AudioChunk]:
        options = options or ResponseOptions()
        heard = self.transcribe(audio)
        yield UserTranscript(heard)
        settings = PiperSettings(length_scale=1.0 / max(0.5, min(2.0, options.speed)))
        if not heard:
            yield TextDelta(NOT_HEARD)
            yield self._speak(NOT_HEARD, settings)
            return
        past = [(t.role, t.text) for t in (history or []) if t.text]
        messages = chat_messages(heard, past, options.instructions or self.config.system_prompt)
        gen = TextGenConfig(max_new_tokens=min(options.max_answer_tokens, self.config.max_answer_tokens),
                            answer_words=self.config.answer_words)
        pending = ""
        spoken_any = False
        for piece in stream_text(self.backbone, self.backbone.chat_ids(messages), gen, self.prefix):
            yield TextDelta(piece)
            pending += piece
            cut = self._speakable_prefix(pending, first=not spoken_any)
            if cut:
                chunk = self._speak(pending[:cut], settings)
                pending = pending[cut:]
                if chunk.samples.size:
                    spoken_any = True
                    yield chunk
        if speakable(pending):
            yield self._speak(pending, settings)

    def _speakable_prefix(self, text: str, first: bool) -> int:
        """Length of the leading part of `text` that is ready to be spoken (0: wait for more)."""
        ends = [m.end() for m in _SPEAKABLE_END.finditer(text)]
        if ends:
            return ends[-1]
        if first:
            comma = text.rfind(", ")
            if comma > 0 and len(text[:comma].split()) >= self.config.first_clause_words:
                return comma + 1
        return 0

    def _speak(self, text: str, settings: PiperSettings) -> AudioChunk:
        audio, rate = self.tts.synthesize(speakable(text), settings)
        self.sample_rate = rate
        return AudioChunk(audio.astype(np.float32), rate)

    def close(self) -> None:
        self.tts.close()
