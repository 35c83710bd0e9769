"""Streaming input: an engine with `live_turn()` gets the user's speech while it is spoken, and every way a turn
can end lets go of the live turn (and so of the engine). Real Silero VAD, espeak-ng speech and protocol; the
engine is a fake (tests only) with the speech LM engine's locking; one check with the real speech LM engine."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from conftest_serve import (  # noqa: F401
    RATE,
    Client,
    FakeEngine,
    FakeLiveEngine,
    answer_speech,
    run,
    running_server,
    silence,
    speculative_run,
    speech,
)

from vivavoce.engine.session import FRAME, FRAME_MS
from vivavoce.engine.turns import TurnConfig
from vivavoce.serve.app import ServerConfig

TURNS = TurnConfig()
PREROLL = int(TURNS.prefix_padding_ms / FRAME_MS)  # frames of audio kept from before the detected speech


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.9)])


def engine_free(engine) -> bool:
    if not engine.lock.acquire(timeout=5):
        return False
    engine.lock.release()
    return True


async def until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_speech_is_prefilled_while_spoken_and_the_answer_comes_from_the_live_turn(answer_speech, question):
    engine = FakeLiveEngine(*answer_speech)

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question, realtime=True)
        done = await c.wait_for("response.done")
        await c.close()
        return c, done

    with running_server(ServerConfig(), engine) as (url, _):
        c, done = run(go(url))
    assert done["response"]["status"] == "completed"
    assert c.audio_of(done["response"]["id"]).size / RATE == pytest.approx(answer_speech[0].size / answer_speech[1],
                                                                           abs=0.05)  # fmt: skip
    [live] = engine.lives
    assert live.answered and live.closed and engine.responded == 0 and engine_free(engine)
    # pushed while the user spoke: most of the speech was in well before the end of the turn was even detected
    stopped_at = c.times[c.events.index(c.of("input_audio_buffer.speech_stopped")[0])]
    early = sum(a.size for t, a in live.pushes if t < stopped_at - 0.4)
    assert early > 1.2 * 16000
    # the first push carries the pre-roll; the silence that ended the turn is not encoded beyond a 160 ms tail
    start, end = c.of("input_audio_buffer.speech_started")[0], c.of("input_audio_buffer.speech_stopped")[0]
    speech_frames = round((end["audio_end_ms"] - start["audio_start_ms"]) / FRAME_MS)
    assert live.pushes[0][1].size >= (PREROLL + 1) * FRAME
    assert abs(live.audio.size - (PREROLL + speech_frames + 5) * FRAME) <= FRAME
    assert engine.heard == [live.audio.size]  # the answer was given to exactly what was pushed


def test_engine_without_live_turn_answers_with_respond(answer_speech, question):
    engine = FakeEngine(*answer_speech)
    assert not hasattr(engine, "live_turn")

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        done = await c.wait_for("response.done")
        await c.close()
        return done

    with running_server(ServerConfig(), engine) as (url, _):
        done = run(go(url))
    assert done["response"]["status"] == "completed"
    assert engine.opened == engine.closed == 1 and engine.heard[0] > 1.8 * 16000  # the whole committed turn


def test_cleared_turn_closes_the_live_turn_and_the_next_turn_gets_a_new_one(answer_speech, question):
    engine = FakeLiveEngine(*answer_speech)
    talking = question[: int(1.5 * RATE)]  # the lead-in and half the question: the turn is still going on

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(talking)
        await c.wait_for("input_audio_buffer.speech_started")
        await until(lambda: engine.lives and engine.lives[0].pushes)
        await c.send({"type": "input_audio_buffer.clear"})
        await c.wait_for("input_audio_buffer.cleared")
        await until(lambda: engine.lives[0].closed)
        assert engine_free(engine) and not c.of("response.created")
        await c.send_audio(question)
        done = await c.wait_for("response.done")
        await c.close()
        return done

    with running_server(ServerConfig(), engine) as (url, _):
        done = run(go(url))
    assert done["response"]["status"] == "completed"
    first, second = engine.lives
    assert not first.answered and second.answered and second.closed and engine.responded == 0


def test_barge_in_during_an_answer_that_holds_the_engine_does_not_deadlock(answer_speech, question):
    engine = FakeLiveEngine(*answer_speech, chunk_s=0.5, pause_s=0.25)  # its live answer holds the engine a while
    interruption = np.concatenate([speech("Wait, stop, tell me about Germany instead."), silence(1.0)])

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        rid = (await c.wait_for("response.audio.delta"))["response_id"]
        await c.send_audio(interruption, realtime=True)
        done1 = await c.wait_for("response.done", where=lambda e: e["response"]["id"] == rid)
        done2 = await c.wait_for("response.done", count=2, timeout=60)
        await c.close()
        return done1, done2

    with running_server(ServerConfig(), engine) as (url, _):
        done1, done2 = run(go(url))
    assert done1["response"]["status"] == "cancelled" and done2["response"]["status"] == "completed"
    # the barge-in's live turn waited (without blocking anything) for the cancelled answer to let go, then got
    # everything said so far
    first, second = engine.lives
    assert first.answered and second.answered and first.closed and second.closed and engine.responded == 0
    assert second.audio.size > 1.5 * 16000 and engine_free(engine)


def test_dropped_speculative_answer_leaves_the_turn_to_respond_with_all_its_audio(answer_speech):
    engine = FakeLiveEngine(*answer_speech)
    c, done, stats = speculative_run(engine)  # a speculative answer in a mid-question pause, dropped
    assert stats.get("speculations_dropped", 0) >= 1 and done["response"]["status"] == "completed"
    assert len(c.of("response.created")) == 1
    [live] = engine.lives  # taken by the first speculation; none after it for this turn
    assert live.closed and engine_free(engine)
    assert engine.responded >= 1 and engine.heard[-1] > 16000 * 2.2  # respond() heard both halves


def test_engine_error_while_streaming_is_an_error_event_and_frees_the_engine(answer_speech, question):
    engine = FakeLiveEngine(*answer_speech, fail_push=True)

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        done = await c.wait_for("response.done")
        await c.close()
        return c, done

    with running_server(ServerConfig(), engine) as (url, _):
        c, done = run(go(url))
    assert done["response"]["status"] == "failed"
    [err] = c.of("error")
    assert err["error"]["code"] == "engine_error" and err["error"]["message"] == "fake_live: the encoder broke"
    assert engine.lives[0].closed and engine_free(engine)


def test_disconnect_while_speaking_closes_the_live_turn(answer_speech, question):
    engine = FakeLiveEngine(*answer_speech)

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question[: int(1.5 * RATE)])
        await until(lambda: engine.lives and engine.lives[0].pushes)
        await c.close()

    with running_server(ServerConfig(), engine) as (url, app):
        run(go(url))
        deadline = time.monotonic() + 10
        while app.state.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not app.state.connections
    assert engine.lives[0].closed and not engine.lives[0].answered and engine_free(engine)
    assert not [t for t in threading.enumerate() if t.name.startswith("vivavoce-live")]


def test_real_speech_lm_engine_answers_a_live_session_with_audio(question):
    from vivavoce.engine.speechlm import SpeechLMEngine, SpeechLMEngineConfig
    from vivavoce.model.generate import GenerationConfig

    gen = GenerationConfig(max_speech_tokens=20, seed=0)
    engine = SpeechLMEngine(SpeechLMEngineConfig(mode="true", generation=gen))  # true mode: no text to write first
    lives = []
    live_turn = engine.live_turn

    def recording_live_turn(wait=True):  # a spy: the session really took the live path
        lives.append(live_turn(wait))
        return lives[-1]

    engine.live_turn = recording_live_turn

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        done = await c.wait_for("response.done", timeout=60)
        await c.close()
        return c, done

    with running_server(ServerConfig(), engine) as (url, _):
        c, done = run(go(url))
    assert done["response"]["status"] == "completed", done
    live = next(x for x in lives if x is not None)
    assert live.tokens > 30  # ~2 s of speech at 25 tokens/s went in through the live turn
    assert 0.3 * RATE < c.audio_of(done["response"]["id"]).size <= 20 / 25 * RATE + RATE // 5  # <= 20 tokens
    assert engine._lock.acquire(timeout=1)
    engine._lock.release()
