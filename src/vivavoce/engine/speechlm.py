"""The true speech-to-speech engine: VAD trim → codec tokens → speech LM → streamed codec decoding.

No ASR and no TTS: the user's speech tokens go straight into the speech LM (pre-filled on the lean decoder), the
speech branch's tokens are spoken by the codec's decoder and vocoder chunk by chunk as they are generated. In
"guided" mode the frozen text branch writes the answer as it goes (streamed as TextDelta) and the speech branch
speaks it; in "true" mode there is no text at all; "text" mode (S→T) writes what guided mode would say and speaks
nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from vivavoce.audio.vad import trim_to_speech
from vivavoce.engine.base import AudioChunk, ResponseOptions, TextDelta, Turn
from vivavoce.errors import VivavoceError
from vivavoce.model.backbone import BackboneConfig, cache_root, load_backbone
from vivavoce.model.fastdecode import FastDecodeConfig, FastDecoder
from vivavoce.model.generate import GenerationConfig, SpeechSession
from vivavoce.model.processor import ProcessorConfig, SpeechLMProcessor
from vivavoce.model.speechlm import SpeechLM, checkpoint_metadata

CHECKPOINT_NAME = "speechlm.safetensors"
VOICE_LINE = "Hello there. I am happy to help you with whatever you would like to know today."


def default_checkpoint() -> Path:
    return Path(str(resources.files("vivavoce"))) / "checkpoints" / "speechlm" / CHECKPOINT_NAME


@dataclass
class SpeechLMEngineConfig:
    checkpoint: str | None = None  # default: the shipped src/vivavoce/checkpoints/speechlm/speechlm.safetensors
    codec: str | None = None  # codec checkpoint folder whose tokens the LM was trained on (default: the shipped one)
    mode: str = "guided"  # true | guided | text; ResponseOptions.mode overrides per answer
    decode: str = "int8"  # lean decoder storage: float32 | bfloat16 | int8; "reference" = the model + HF cache
    max_len: int = 2048
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # Speech tokens per codec decoding chunk (0.16 s). Measured on 1 thread (8 s answers): chunk 5 → first audio
    # 0.18 s, total 1.73 s; chunk 2 → 0.145 s, 1.88 s. Streamed decoding is exact, so smaller costs only CPU.
    decode_chunk: int = 2


def check_codec(meta: dict, fingerprint: str, path: Path) -> None:
    """The speech LM predicts the ids of the tokenizer it was trained on; any other tokenizer's ids mean nothing to
    it. Checkpoints from before the fingerprint was recorded are taken on trust."""
    trained_on = meta.get("codec_tokenizer")
    if trained_on and trained_on != fingerprint:
        raise VivavoceError(f"{path}: trained on codec tokenizer {trained_on}, but the codec's tokenizer is "
                            f"{fingerprint}: retrain the speech LM on this codec's tokens")


class SpeechLMEngine:
    name = "speechlm"

    def __init__(self, config: SpeechLMEngineConfig | None = None):
        self.config = config = config or SpeechLMEngineConfig()
        path = Path(config.checkpoint) if config.checkpoint else default_checkpoint()
        if not path.is_file():
            raise VivavoceError(
                f"speechlm engine: no trained speech LM checkpoint at {path} (train one with `vivavoce train lm`)"
            )
        meta = checkpoint_metadata(path)
        from vivavoce.codec import Codec

        self.codec = Codec.load(config.codec)
        check_codec(meta, self.codec.tokenizer_fingerprint, path)
        self.sample_rate = self.codec.sample_rate
        self.model = SpeechLM.load(path, load_backbone(config.backbone))
        proc_cfg = ProcessorConfig.layout_of(meta.get("processor"))  # what decoding must match
        self.processor = SpeechLMProcessor(self.model.tokenizer, self.model.config, proc_cfg)
        if config.decode == "reference":
            decoder = None
        else:
            decoder = FastDecoder.for_speechlm(self.model, FastDecodeConfig(config.decode, config.max_len))
        # One-turn answers: the text branch's layers are skipped once no more text is wanted (all of true mode).
        self.session = SpeechSession(self.model, self.processor, decoder, mode="s2s", keep_text_cache=False)
        self.voice = np.asarray(meta["voice_dvector"], dtype=np.float32) if "voice_dvector" in meta else None
        self._lock = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        """One tiny answer, so that the first user does not pay for lazy kernel set-up."""
        self.session.push([0] * 4)
        list(self.session.respond(GenerationConfig(mode="guided", max_speech_tokens=2, max_text_tokens=2,
                                                   min_speech_tokens=0)))  # fmt: skip
        self.session.reset()

    def _voice(self) -> np.ndarray:
        """The assistant's voice (d-vector): from the checkpoint, else Piper's joe (the corpus's assistant voice),
        rendered once and cached."""
        if self.voice is None:
            cached = cache_root() / "voices" / "joe-dvector.npy"
            if cached.is_file():
                self.voice = np.load(cached, allow_pickle=False)
            else:
                from vivavoce.audio.io import resample
                from vivavoce.speechtools.tts import PiperTTS

                tts = PiperTTS()
                try:
                    audio, rate = tts.synthesize(VOICE_LINE)
                finally:
                    tts.close()
                self.voice = self.codec.speaker(resample(audio, rate, 16000)).numpy().astype(np.float32)
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, self.voice, allow_pickle=False)
        return self.voice

    def respond(
        self, audio: np.ndarray, history: list[Turn] | None = None, options: ResponseOptions | None = None
    ) -> Iterator[TextDelta | AudioChunk]:
        """Answer one spoken turn. History is not used yet: every answer starts after the system prompt."""
        options = options or ResponseOptions()
        speech = trim_to_speech(np.asarray(audio, dtype=np.float32).reshape(-1))
        if speech.size == 0:
            raise VivavoceError("no speech found in the input")
        ids = self.codec.encode(speech)
        with self._lock:
            self.session.reset()
            self.session.push(ids)
            yield from self._answer(options)

    def live_turn(self, wait: bool = True) -> LiveTurn | None:
        """Streaming input: push the user's audio as it arrives (its tokens are pre-filled at once), then answer.
        One live turn at a time per engine, and none while an answer runs; `answer()` or `close()` ends it.
        `wait=False`: None at once if the engine is busy (a caller on an event loop must never wait for it)."""
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            return LiveTurn(self)
        except BaseException:
            self._lock.release()
            raise

    def _answer(self, options: ResponseOptions) -> Iterator[TextDelta | AudioChunk]:
        """The reply to the user turn open in the session (the caller holds the lock)."""
        stream = self.codec.decode_stream(self._voice(), speed=options.speed, chunk=self.config.decode_chunk)
        text: list[int] = []
        sent = ""
        for kind, token in self.session.respond(self._generation(options)):
            if kind == "text":
                text.append(token)
                piece = self.processor.decode_text(text)
                if not piece.endswith("\ufffd") and len(piece) > len(sent):  # never half a character
                    yield TextDelta(piece[len(sent) :])
                    sent = piece
            else:
                pcm = stream.push([token])
                if pcm.size:
                    yield AudioChunk(pcm.astype(np.float32), self.sample_rate)
        pcm = stream.flush()
        if pcm.size:
            yield AudioChunk(pcm.astype(np.float32), self.sample_rate)

    def _generation(self, options: ResponseOptions) -> GenerationConfig:
        mode = options.mode or self.config.mode
        return replace(self.config.generation, mode=mode, max_text_tokens=options.max_answer_tokens)


class LiveTurn:
    """A user turn fed while it is spoken: 16 kHz audio → streaming codec encoder → tokens pre-filled into the
    speech LM, so that at the end of the turn only the last few tokens remain to be computed. Made by
    `SpeechLMEngine.live_turn()`, which takes the engine's lock for it."""

    def __init__(self, engine: SpeechLMEngine):
        self.engine = engine
        self._held = True
        engine.session.reset()
        self.encoder = engine.codec.encode_stream()
        self.tokens = 0

    def push(self, audio16k: np.ndarray) -> None:
        ids = self.encoder.push(np.asarray(audio16k, dtype=np.float32).reshape(-1))
        if len(ids):
            self.engine.session.push(ids)
            self.tokens += len(ids)

    def answer(self, options: ResponseOptions | None = None) -> Iterator[TextDelta | AudioChunk]:
        try:
            ids = self.encoder.flush()
            if len(ids):
                self.engine.session.push(ids)
                self.tokens += len(ids)
            if self.tokens == 0:
                raise VivavoceError("no speech was pushed before the answer")
            yield from self.engine._answer(options or ResponseOptions())
        finally:
            self.close()

    def close(self) -> None:
        if self._held:
            self._held = False
            self.engine._lock.release()
