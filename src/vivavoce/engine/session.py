"""A live spoken conversation over any Engine: PCM16 frames in, turn events and PCM16 answer frames out.

The session lives on an asyncio loop. Input is cut into 32 ms frames at 16 kHz for Silero VAD; a turn ends after
`silence_ms` of silence and is answered at once (server VAD), or when the client commits it (manual mode).
The engine's `respond()` is a blocking generator (model compute), so each answer runs in a worker thread that
hands events over a bounded asyncio queue; cancelling sets a flag the thread checks between events, then the
thread closes the generator itself (a generator cannot be closed from another thread while it runs).

Events go out through `emit(event) -> bool`; False means the consumer is full (a client that stopped reading),
and the session cancels the answer in progress rather than buffer without bound.

Turn-taking rules (see also `vivavoce.engine.turns`):
- barge-in: user speech during an answer (generating or still playing by our playback clock) that lasts
  `backchannel_max_ms` cancels it: generation stops, no audio of that answer is emitted afterwards;
- backchannel: speech during an answer that ends sooner is ignored: no cancel, no turn;
- `speech_started` during an answer is announced only once the speech counts as a barge-in, so clients that stop
  playback on it (as Realtime clients do) do not cut the answer for an "mm-hm";
- echo guard: input matching our own recent playback is not speech (rule in `turns.py`);
- speculative start (`speculative_ms` > 0): once the silence after speech reaches `speculative_ms`, the answer
  starts computing out of sight; its events are held back until the silence reaches `silence_ms` (then they go
  out at once) and it is dropped without a trace if the user speaks again first. It hides up to
  silence_ms - speculative_ms of compute, at the price of compute wasted on mid-sentence pauses.

Streaming input (engines with `live_turn`, e.g. the speech LM; server VAD only): from the moment a turn's speech is
announced, its audio (the VAD pre-roll included) goes into a `LiveFeed` that has the engine encode and pre-fill it
while the user talks, and the turn's answer is `live.answer(options)` instead of `respond()`, so only the answer
is computed after the turn ends. Where that cannot hold - manual commits, several turns answered at once, a
speculative answer that took the live turn and was dropped, an engine that stayed busy all turn - the answer
falls back to `respond()` with the whole audio. Other engines never see a live turn.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vivavoce.audio.io import resample
from vivavoce.audio.stream import FrameChunker, float_to_pcm16, pcm16_to_float
from vivavoce.engine.base import INPUT_RATE, AudioChunk, ResponseOptions, TextDelta, Turn, UserTranscript
from vivavoce.engine.livefeed import LiveFeed
from vivavoce.engine.turns import PlaybackClock, SessionVAD, TurnConfig, is_echo
from vivavoce.errors import AudioError, VivavoceError

FRAME = SessionVAD.FRAME
FRAME_MS = 1000 * FRAME / INPUT_RATE
RATES = (8000, 16000, 22050, 24000, 44100, 48000)
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


@dataclass
class SessionConfig:
    input_rate: int = 24000  # the Realtime API's pcm16 is 24 kHz mono
    output_rate: int = 24000
    server_vad: bool = True  # False: the client commits turns and asks for responses itself
    create_response: bool = True  # server VAD answers each turn by itself
    barge_in: bool = True  # user speech may cancel an answer (Realtime: turn_detection.interrupt_response)
    turns: TurnConfig = field(default_factory=TurnConfig)
    options: ResponseOptions = field(default_factory=ResponseOptions)
    delta_ms: int = 100  # answer audio goes out in pieces this long
    engine_queue: int = 8  # events the worker thread may run ahead of the loop
    max_buffer_s: float = 60.0  # manual mode: the most uncommitted audio kept
    max_history: int = 12  # turns of history kept (each one lengthens every later prompt)


# Events out of a session. The server maps them to its protocol.
@dataclass
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass
class InputCommitted:
    item_id: str
    previous_item_id: str | None


@dataclass
class InputCleared:
    pass


@dataclass
class UserTranscriptDone:
    item_id: str
    text: str


@dataclass
class ResponseStarted:
    response_id: str
    item_id: str


@dataclass
class TextOut:
    response_id: str
    item_id: str
    text: str


@dataclass
class AudioOut:
    response_id: str
    item_id: str
    pcm16: bytes


@dataclass
class ResponseFinished:
    response_id: str
    item_id: str
    status: str  # completed | cancelled | failed
    reason: str | None
    text: str
    metrics: dict


@dataclass
class SessionError:
    code: str
    message: str


Event = (SpeechStarted | SpeechStopped | InputCommitted | InputCleared | UserTranscriptDone | ResponseStarted
         | TextOut | AudioOut | ResponseFinished | SessionError)  # fmt: skip
_DONE = object()


@dataclass
class _Response:
    id: str
    item_id: str
    user_item_id: str
    audio: np.ndarray
    options: ResponseOptions
    speech_end: float | None  # monotonic time the user stopped speaking (None: manual turn)
    committed: float
    stop: threading.Event = field(default_factory=threading.Event)
    status: str = "in_progress"
    user_text: str | None = None
    text: str = ""
    first_audio: float | None = None
    audio_s: float = 0.0
    task: asyncio.Task | None = None
    held: bool = False  # speculative: computing, but nothing goes out until the turn is confirmed
    backlog: list = field(default_factory=list)
    generated: bool = False  # the engine finished while the answer was held
    failure: BaseException | None = None
    live: LiveFeed | None = None  # the turn, pre-filled while spoken: answered with it instead of respond()


class Session:
    def __init__(
        self,
        engine,
        emit: Callable[[Event], bool],
        config: SessionConfig | None = None,
        engine_lock: threading.Semaphore | None = None,
    ):
        self.engine = engine
        self.emit = emit
        self.config = config or SessionConfig()
        self.engine_lock = engine_lock
        self.history: list[Turn] = []
        self.playback = PlaybackClock()
        self.vad = SessionVAD()
        self.response: _Response | None = None
        self.stats = collections.Counter()  # echo_frames, backchannels, barge_ins, dropped_frames...
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._last_item: str | None = None
        self._pending: list[tuple[str, np.ndarray]] = []  # committed user turns not yet answered
        self._spec: _Response | None = None  # a speculative answer to the turn in progress
        self._frames_in = 0  # the input timeline (audio_start_ms/audio_end_ms) runs for the whole session
        self._live: LiveFeed | None = None  # the turn in progress, streamed into the engine (server VAD)
        self._reset_input()

    # ---- configuration -------------------------------------------------------------------------------------
    def configure(self, config: SessionConfig) -> None:
        old = self.config
        input_changed = (config.input_rate, config.server_vad, config.turns.prefix_padding_ms) != (
            old.input_rate, old.server_vad, old.turns.prefix_padding_ms)
        for rate in (config.input_rate, config.output_rate):
            if rate not in RATES:
                raise VivavoceError(f"sample rate {rate} is not supported; use one of {', '.join(map(str, RATES))}")
        self.config = config
        if input_changed:
            self._reset_input()

    def _reset_input(self) -> None:
        import soxr

        self._close_live()  # the turn it was streaming is gone
        rate = self.config.input_rate
        self._resampler = None if rate == INPUT_RATE else soxr.ResampleStream(rate, INPUT_RATE, 1, dtype="float32")
        self._chunker = FrameChunker(FRAME)
        self._buffer: list[np.ndarray] = []  # manual mode
        self._buffer_samples = 0
        pad = max(1, int(self.config.turns.prefix_padding_ms / FRAME_MS))
        self._prefix: collections.deque[np.ndarray] = collections.deque(maxlen=pad)
        self._recent: collections.deque[np.ndarray] = collections.deque(maxlen=4)  # echo guard's mic window
        self._in_speech = False
        self._announced = False
        self._turn: list[np.ndarray] = []
        self._speech_frames = 0  # frames from the start of speech to its last speech frame
        self._silence_run = 0
        self._turn_item: str | None = None
        self._start_ms = 0
        self._last_speech_t = 0.0
        self.vad.reset()

    # ---- input ---------------------------------------------------------------------------------------------
    def append_audio(self, pcm: bytes) -> None:
        """PCM16 mono little-endian at `config.input_rate`. Raises AudioError on a malformed frame."""
        samples = pcm16_to_float(pcm)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        if not self.config.server_vad:
            limit = int(self.config.max_buffer_s * INPUT_RATE)
            if self._buffer_samples + samples.size > limit:
                self.stats["dropped_frames"] += 1
                raise AudioError(f"input audio buffer is full ({self.config.max_buffer_s:g} s): commit or clear it")
            self._buffer.append(samples)
            self._buffer_samples += samples.size
            return
        for frame in self._chunker.push(samples):
            self._on_frame(frame)

    def _answer_active(self, now: float) -> bool:
        return self.response is not None or self.playback.playing(now)

    def _on_frame(self, frame: np.ndarray) -> None:
        cfg = self.config.turns
        now = time.monotonic()
        self._frames_in += 1
        self._recent.append(frame)
        p = self.vad(frame)
        active = self._answer_active(now)
        if p >= cfg.threshold and cfg.echo_guard and self.playback.playing(now):
            mic = np.concatenate(self._recent)
            look = cfg.echo_delay_ms / 1000 + mic.size / INPUT_RATE
            if is_echo(mic, self.playback.window(now - look, now + 0.05), cfg):
                self.stats["echo_frames"] += 1
                p = 0.0
        speech = p >= cfg.threshold
        if not self._in_speech:
            if not speech:
                self._prefix.append(frame)
                return
            self._in_speech, self._announced = True, False
            self._turn = list(self._prefix) + [frame]
            self._prefix.clear()
            self._speech_frames, self._silence_run = 1, 0
            self._start_ms = int((self._frames_in - 1) * FRAME_MS)
            self._turn_item = new_id("item")
            self._last_speech_t = now
        else:
            self._turn.append(frame)
            if self._live is not None:
                self._live.push(frame, speech)
            if speech:
                self._speech_frames += self._silence_run + 1
                self._silence_run = 0
                self._last_speech_t = now
                self._drop_speculation()
            else:
                self._silence_run += 1
        speech_ms = self._speech_frames * FRAME_MS
        if not self._announced:
            if active:
                if self.config.barge_in and speech_ms >= max(cfg.backchannel_max_ms, cfg.min_speech_ms):
                    self.stats["barge_ins"] += 1
                    self.cancel_response("turn_detected")
                    self._announce()
                    self._open_live()
            elif speech_ms >= cfg.min_speech_ms:
                self._announce()
                self._open_live()
        ended = self._silence_run * FRAME_MS >= cfg.silence_ms
        if (not ended and self._announced and self._spec is None and 0 < cfg.speculative_ms < cfg.silence_ms
                and self._silence_run * FRAME_MS >= cfg.speculative_ms and self.config.create_response
                and not active and not self._pending and not self._closed):  # fmt: skip
            # it takes the live turn: if it is dropped, the rest of the turn is answered by respond()
            self._spec = self._start(np.concatenate(self._turn), self._turn_item, None, self._last_speech_t, True,
                                     self._take_live(self._turn_item))  # fmt: skip
        if ended or len(self._turn) * FRAME_MS >= cfg.max_turn_s * 1000:
            self._in_speech = False
            if not self._announced:
                # noise, or a backchannel during an answer: no turn
                if active:
                    self.stats["backchannels"] += 1
                self._turn = []
                self._close_live()
                return
            end_ms = self._start_ms + int(self._speech_frames * FRAME_MS)
            self.emit(SpeechStopped(self._turn_item, end_ms))
            audio = np.concatenate(self._turn)
            self._turn = []
            self._commit(self._turn_item, audio)
            if self._spec is not None:
                self._pending.pop()  # the speculative answer is answering it
                self._release(self._spec)
            elif self.config.create_response:
                try:
                    self.create_response(speech_end=self._last_speech_t)
                except VivavoceError as e:  # e.g. the client started one itself meanwhile: the turn stays pending
                    code, _, msg = str(e).partition(": ")
                    self.emit(SessionError(code, msg))
            self._close_live()  # not taken by an answer: a pending turn is answered with respond() later

    def _announce(self) -> None:
        self._announced = True
        self.emit(SpeechStarted(self._turn_item, self._start_ms))

    def _open_live(self) -> None:
        """Stream the announced turn into the engine (its audio so far, pre-roll included), if the engine can take
        it and this turn will be answered alone, by the session itself."""
        if (getattr(self.engine, "live_turn", None) is None or self.response is not None or self._pending
                or not self.config.create_response or self._closed):  # fmt: skip
            return
        self._live = LiveFeed(self.engine, self._turn_item, np.concatenate(self._turn), self.engine_lock)

    def _take_live(self, item_id: str) -> LiveFeed | None:
        live = self._live
        if live is None or live.item_id != item_id:
            return None
        self._live = None
        return live

    def _close_live(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None

    def _commit(self, item_id: str, audio: np.ndarray) -> None:
        self.emit(InputCommitted(item_id, self._last_item))
        self._last_item = item_id
        self._pending.append((item_id, audio))

    def commit(self) -> str:
        """Manual commit of the input buffer as a user turn (also allowed under server VAD: ends the turn now)."""
        if self.config.server_vad:
            audio = np.concatenate(self._turn + self._chunker.flush()) if self._turn else np.zeros(0, np.float32)
            item = self._turn_item or new_id("item")
            self._in_speech, self._turn = False, []
            self._close_live()  # a turn the client ends is answered by respond()
        else:
            audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.float32)
            item = new_id("item")
            self._buffer, self._buffer_samples = [], 0
        if audio.size < INPUT_RATE // 10:
            raise VivavoceError("input_audio_buffer_commit_empty: less than 100 ms of audio to commit")
        self._commit(item, audio)
        return item

    def clear(self) -> None:
        self._reset_input()
        self.emit(InputCleared())

    # ---- answers -------------------------------------------------------------------------------------------
    def create_response(self, options: ResponseOptions | None = None, speech_end: float | None = None) -> str:
        if self._closed:
            raise VivavoceError("session_closed: the session is closed")
        if self.response is not None:
            raise VivavoceError("conversation_already_has_active_response: cancel it first (response.cancel)")
        if not self._pending:
            raise VivavoceError("conversation_empty: no committed user audio to answer")
        user_item = self._pending[-1][0]
        live = self._take_live(user_item) if len(self._pending) == 1 else None
        audio = np.concatenate([a for _, a in self._pending])
        self._pending.clear()
        return self._start(audio, user_item, options, speech_end, False, live).id

    def _start(self, audio, user_item, options, speech_end, held: bool, live: LiveFeed | None = None) -> _Response:
        resp = _Response(
            new_id("resp"), new_id("item"), user_item, audio, options or self.config.options,
            speech_end, time.monotonic(), held=held, live=live,
        )  # fmt: skip
        if not held:
            self.response = resp
            self.emit(ResponseStarted(resp.id, resp.item_id))
        resp.task = asyncio.get_running_loop().create_task(self._run(resp), name=f"vivavoce-{resp.id}")
        self._tasks.add(resp.task)
        resp.task.add_done_callback(self._tasks.discard)
        return resp

    def _release(self, resp: _Response) -> None:
        """The turn is confirmed: the speculative answer becomes the answer, and what it held goes out."""
        self._spec = None
        resp.held = False
        resp.committed = time.monotonic()
        self.response = resp
        self.emit(ResponseStarted(resp.id, resp.item_id))
        backlog, resp.backlog = resp.backlog, []
        for ev in backlog:
            if resp.stop.is_set():
                return
            self._handle(resp, ev)
        if resp.generated and self.response is resp:
            self._complete(resp, resp.failure)

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            self._spec.stop.set()  # its thread stops at the next event; nothing of it was ever emitted
            self._spec = None
            self.stats["speculations_dropped"] += 1

    def cancel_response(self, reason: str = "client_cancelled") -> bool:
        """Stop the answer in progress now: no audio of it is emitted after this returns."""
        resp = self.response
        self.playback.stop()
        if resp is None:
            return False
        resp.status = "cancelled"
        resp.stop.set()
        self.response = None
        self._finish(resp, reason)
        return True

    def _finish(self, resp: _Response, reason: str | None) -> None:
        if resp.user_text is not None:
            self.history.append(Turn("user", text=resp.user_text))
        if resp.text:
            self.history.append(Turn("assistant", text=resp.text))
        del self.history[: -self.config.max_history]
        base = resp.speech_end or resp.committed
        metrics = {
            "first_audio_ms": None if resp.first_audio is None else round(1000 * (resp.first_audio - base)),
            "commit_to_first_audio_ms": None
            if resp.first_audio is None
            else round(1000 * (resp.first_audio - resp.committed)),
            "audio_s": round(resp.audio_s, 3),
        }
        self.emit(ResponseFinished(resp.id, resp.item_id, resp.status, reason, resp.text, metrics))

    async def _run(self, resp: _Response) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.config.engine_queue)
        history = list(self.history)
        thread = threading.Thread(
            target=self._work, args=(resp, history, queue, loop), name=f"vivavoce-{resp.id}", daemon=True
        )
        thread.start()
        failure = None
        try:
            while True:
                ev = await queue.get()
                if ev is _DONE:
                    break
                if resp.stop.is_set():
                    continue  # drain so the worker never blocks; nothing of a cancelled answer goes out
                if isinstance(ev, BaseException):
                    failure = ev
                    continue
                if resp.held:
                    resp.backlog.append(ev)
                else:
                    self._handle(resp, ev)
        finally:
            stopped = resp.stop.is_set()
            resp.stop.set()
            await loop.run_in_executor(None, thread.join)
        if resp.held:  # finished before the turn was confirmed: `_release` completes it
            resp.generated, resp.failure = True, failure
            if not stopped:
                resp.stop.clear()
            return
        if self.response is resp:  # not cancelled meanwhile
            self._complete(resp, failure)

    def _complete(self, resp: _Response, failure: BaseException | None) -> None:
        self.response = None
        if failure is not None:
            resp.status = "failed"
            msg = str(failure) if isinstance(failure, VivavoceError) else f"{type(failure).__name__}: {failure}"
            self.emit(SessionError("engine_error", msg))
            self._finish(resp, "engine_error")
        else:
            resp.status = "completed"
            self._finish(resp, None)

    def _work(self, resp: _Response, history: list[Turn], queue: asyncio.Queue, loop) -> None:
        """Worker thread: runs the engine's generator, checking the stop flag between events."""

        def put(item, stoppable=True) -> bool:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            deadline = time.monotonic() + 30
            while True:
                try:
                    fut.result(timeout=0.05)
                    return True
                except TimeoutError:
                    if (stoppable and resp.stop.is_set()) or time.monotonic() > deadline:
                        fut.cancel()
                        return False

        gen = None
        locked = False
        try:
            live = None
            if resp.live is not None:
                if resp.stop.is_set():
                    return  # dropped: respond() below would wait for the engine this very feed holds until finish()
                live = resp.live.take()
            if live is not None:  # the feed holds the engine slot: taking it again here could deadlock
                gen = live.answer(resp.options)
            else:  # no live turn, or its engine never came free (then the feed holds nothing)
                if self.engine_lock is not None:
                    while not (locked := self.engine_lock.acquire(timeout=0.05)):
                        if resp.stop.is_set():
                            return
                gen = self.engine.respond(resp.audio, history, resp.options)
            for ev in gen:
                if resp.stop.is_set() or not put(ev):
                    break
        except BaseException as e:  # handed to the loop, which reports it as an error event
            if not resp.stop.is_set():
                put(e)
        finally:
            try:
                if gen is not None:
                    gen.close()
            finally:
                if resp.live is not None:  # also when the answer never started (a generator closed unstarted
                    resp.live.finish()  # runs none of its own cleanup)
                if locked:
                    self.engine_lock.release()
                try:
                    put(_DONE, stoppable=False)
                except RuntimeError:  # the loop is gone (shutdown): nobody is waiting
                    pass

    def _handle(self, resp: _Response, ev) -> None:
        if isinstance(ev, UserTranscript):
            resp.user_text = ev.text
            self.emit(UserTranscriptDone(resp.user_item_id, ev.text))
        elif isinstance(ev, TextDelta):
            resp.text += ev.text
            self.emit(TextOut(resp.id, resp.item_id, ev.text))
        elif isinstance(ev, AudioChunk) and ev.samples.size:
            samples = np.asarray(ev.samples, dtype=np.float32)
            out = resample(samples, ev.rate, self.config.output_rate)
            self.playback.add(resample(samples, ev.rate, INPUT_RATE))
            step = max(1, int(self.config.output_rate * self.config.delta_ms / 1000))
            for i in range(0, out.size, step):
                if resp.stop.is_set():
                    return
                if resp.first_audio is None:
                    resp.first_audio = time.monotonic()
                piece = out[i : i + step]
                if not self.emit(AudioOut(resp.id, resp.item_id, float_to_pcm16(piece))):
                    self.stats["dropped_frames"] += 1
                    self.emit(SessionError("slow_consumer", "client is not reading fast enough: answer cancelled"))
                    self.cancel_response("slow_consumer")
                    return
                resp.audio_s += piece.size / self.config.output_rate

    # ---- teardown ------------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Cancel any answer and wait for its worker thread: nothing of the session outlives this."""
        self._closed = True
        self._drop_speculation()
        live = self._live
        self._close_live()
        resp = self.response
        if resp is not None:
            resp.status = "cancelled"
            resp.stop.set()
            self.response = None
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if live is not None:
            await asyncio.get_running_loop().run_in_executor(None, live.join)

