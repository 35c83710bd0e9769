"""Shared pieces of the serve tests: an in-process uvicorn on a free loopback port, a Realtime test client,
speech synthesised with espeak-ng, and a fake engine (tests only) for fast, deterministic turn-taking tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from vivavoce.audio.io import resample
from vivavoce.audio.stream import float_to_pcm16, pcm16_to_float
from vivavoce.engine.base import AudioChunk, TextDelta, UserTranscript
from vivavoce.errors import VivavoceError
from vivavoce.speechtools.tts import EspeakSettings, espeak_synthesize

RATE = 24000  # the Realtime default the tests speak


def speech(text: str, rate: int = RATE, wpm: int = 160, voice: str = "en-us") -> np.ndarray:
    audio, r = espeak_synthesize(text, EspeakSettings(voice=voice, rate=wpm))
    return resample(audio, r, rate)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def run(coro):
    """A test's client coroutine, with a time limit so a hang fails instead of stalling the suite."""
    return asyncio.run(asyncio.wait_for(coro, 120))


def session_of(app):
    """The server's one live session."""
    return next(iter(app.state.connections.values())).session


def paused_question() -> np.ndarray:
    # espeak ends each phrase with 350 ms of silence: a pause mid-question past speculative_ms (150), short of
    # silence_duration_ms (600)
    return np.concatenate([silence(0.3), speech("I would like to know"), speech("the capital of France."),
                           silence(1.5)])  # fmt: skip


def speculative_run(engine):
    """`paused_question` under server VAD with speculative_ms 150 and silence_duration_ms 600: a speculative answer
    starts in the pause and is dropped when the user goes on. (client, the response.done, the session's stats)."""
    from vivavoce.serve.app import ServerConfig

    async def go(url):
        c = await Client.connect(url)
        td = {"type": "server_vad", "silence_duration_ms": 600}
        await c.send({"type": "session.update", "session": {"turn_detection": td, "speculative_ms": 150}})
        await c.send_audio(paused_question())
        done = await c.wait_for("response.done")
        await asyncio.sleep(0.5)
        stats = dict(session_of(app).stats)
        await c.close()
        return c, done, stats

    with running_server(ServerConfig(), engine) as (url, app):
        return run(go(url))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(config, engine):
    """uvicorn serving create_app(config, engine) in a thread on 127.0.0.1; yields (base_url, app)."""
    import uvicorn

    from vivavoce.serve.app import create_app, uvicorn_config

    config.host, config.port = "127.0.0.1", free_port()
    app = create_app(config, engine)
    server = uvicorn.Server(uvicorn_config(app, config))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{config.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class FakeEngine:
    """Engine protocol, for tests only: answers every turn with the same pre-made speech, quickly.

    `pause_s` between chunks lets tests act while an answer is being generated; `opened`/`closed` count
    generators, to check that cancelling closes them.
    """

    name = "fake"

    def __init__(self, answer: np.ndarray, rate: int, chunk_s: float = 1.0, pause_s: float = 0.0, text="Fake answer."):
        self.answer, self.sample_rate, self.chunk_s, self.pause_s, self.text = answer, rate, chunk_s, pause_s, text
        self.opened = self.closed = 0
        self.heard: list[int] = []  # samples of each turn answered
        self.histories: list[list] = []  # the history each turn was answered with

    def respond(self, audio, history=None, options=None):
        self.opened += 1
        self.heard.append(int(audio.size))
        self.histories.append([(t.role, t.text) for t in history or []])
        try:
            yield UserTranscript("fake question")
            for word in self.text.split():
                yield TextDelta(word + " ")
            step = int(self.chunk_s * self.sample_rate)
            for i in range(0, self.answer.size, step):
                if self.pause_s:
                    time.sleep(self.pause_s)
                yield AudioChunk(self.answer[i : i + step], self.sample_rate)
        finally:
            self.closed += 1


class FakeLive:
    """A live turn of FakeLiveEngine: records every push (samples and time); answers with the engine's answer."""

    def __init__(self, engine: FakeLiveEngine):
        self.engine = engine
        self.pushes: list[tuple[float, np.ndarray]] = []
        self.answered = self.closed = False

    def push(self, audio16k) -> None:
        if self.engine.fail_push:
            raise VivavoceError("fake_live: the encoder broke")
        self.pushes.append((time.monotonic(), np.array(audio16k, dtype=np.float32)))

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate([a for _, a in self.pushes]) if self.pushes else np.zeros(0, np.float32)

    def answer(self, options=None):
        assert not self.answered, "a live turn answers once: its pre-filled state is used up"
        self.answered = True
        try:
            yield from FakeEngine.respond(self.engine, self.audio, [], options)
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.lock.release()


class FakeLiveEngine(FakeEngine):
    """FakeEngine with streaming input, locked like the speech LM engine: one live turn at a time, held from
    `live_turn()` until its answer ends or it is closed, and `respond()` waits for the same lock."""

    def __init__(self, *args, fail_push: bool = False, **kw):
        super().__init__(*args, **kw)
        self.lock = threading.Lock()
        self.lives: list[FakeLive] = []
        self.responded = 0  # answers that went through respond(), not a live turn
        self.fail_push = fail_push

    def live_turn(self, wait: bool = True):
        if not self.lock.acquire(blocking=wait):
            return None
        self.lives.append(FakeLive(self))
        return self.lives[-1]

    def respond(self, audio, history=None, options=None):
        with self.lock:
            self.responded += 1
            yield from super().respond(audio, history, options)


@pytest.fixture(scope="session")
def answer_speech() -> tuple[np.ndarray, int]:
    text = ("Here is a rather long answer, spoken slowly, so that there is plenty of time to talk over it "
            "while it plays, and to check what the server does then.")  # fmt: skip
    audio, rate = espeak_synthesize(text, EspeakSettings(rate=150))
    return audio.astype(np.float32), rate


@dataclass
class Client:
    """A Realtime client over `websockets`, recording every event with its arrival time."""

    ws: object
    events: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    reader: asyncio.Task | None = None

    @classmethod
    async def connect(cls, url: str, read: bool = True, path: str = "/v1/realtime", **kw) -> "Client":
        import websockets

        ws = await websockets.connect(f"ws://{url}{path}", max_size=None, **kw)
        client = cls(ws)
        if read:
            client.reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                self.events.append(json.loads(msg))
                self.times.append(time.monotonic())
        except Exception:
            pass

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def send_audio(self, audio: np.ndarray, chunk_s: float = 0.1, realtime: bool = False,
                         rate: int = RATE) -> float:  # fmt: skip
        """Append `audio` in chunks; returns the time the last chunk went out."""
        step = int(chunk_s * rate)
        start = time.monotonic()
        for n, i in enumerate(range(0, audio.size, step)):
            pcm = float_to_pcm16(audio[i : i + step])
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
            if realtime:
                await asyncio.sleep(max(0.0, start + (n + 1) * chunk_s - time.monotonic()))
            else:
                await asyncio.sleep(0)
        return time.monotonic()

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, kind: str, timeout: float = 60.0, count: int = 1, where=None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.of(kind) if where is None or where(e)]
            if len(found) >= count:
                return found[count - 1]
            if self.reader is not None and self.reader.done():
                break
            await asyncio.sleep(0.02)
        kinds = [e["type"] for e in self.events][-15:]
        raise AssertionError(f"no {kind} (x{count}) within {timeout} s; last events: {kinds}")

    def audio_of(self, response_id: str) -> np.ndarray:
        pcm = b"".join(base64.b64decode(e["delta"]) for e in self.of("response.audio.delta")
                       if e["response_id"] == response_id)  # fmt: skip
        return pcm16_to_float(pcm)

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 10)


@contextlib.contextmanager
def chromium(fake_mic_wav):
    """Headless Debian chromium via selenium and the system chromedriver, with `fake_mic_wav` as the microphone
    (it loops). Skips the test, with the reason, if chromium, chromedriver or selenium is missing."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_exe = shutil.which("chromedriver")
    if exe is None or driver_exe is None:
        pytest.skip("Debian chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for flag in ("--headless", "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_mic_wav}", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
                 "--disable-dev-shm-usage"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_exe))
    try:
        yield driver
    finally:
        driver.quit()


PAGE_STATE = (
    "const s = window.vivavoce; return {played: s.played, assistant: s.assistant, user: s.user, errors: s.errors,"
    " latencies: s.latencies, connected: s.connected, page: document.getElementById('transcript').innerText};"
)


def wait_page(driver, until, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    state = {}
    while time.monotonic() < deadline:
        state = driver.execute_script(PAGE_STATE)
        if until(state):
            break
        time.sleep(0.3)
    return state
