"""Turn-taking that does not misfire: barge-in leaves no stale audio, our own echo is not a turn, a backchannel
does not cancel an answer. Each with a control showing the same input does trigger when the guard is off.

Real Silero VAD, real espeak-ng speech, real protocol; the engine is a fast fake (tests only).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest_serve import (  # noqa: F401
    RATE,
    Client,
    FakeEngine,
    answer_speech,
    run,
    running_server,
    session_of,
    silence,
    speculative_run,
    speech,
)

from vivavoce.serve.app import ServerConfig


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.9)])


def test_barge_in_cancels_and_no_stale_audio_follows(answer_speech, question):
    engine = FakeEngine(*answer_speech, chunk_s=0.5, pause_s=0.25)  # still generating when interrupted
    interruption = np.concatenate([speech("Wait, stop, tell me about Germany instead."), silence(1.0)])

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        first = await c.wait_for("response.audio.delta")
        rid = first["response_id"]
        await c.send_audio(interruption, realtime=True)
        done1 = await c.wait_for("response.done", where=lambda e: e["response"]["id"] == rid)
        done2 = await c.wait_for("response.done", count=2, timeout=60)
        await c.close()
        return c, rid, done1, done2

    with running_server(ServerConfig(), engine) as (url, app):
        c, rid, done1, done2 = run(go(url))
    assert done1["response"]["status"] == "cancelled"
    assert done1["response"]["status_details"]["reason"] == "turn_detected"
    starts = [i for i, e in enumerate(c.events) if e["type"] == "input_audio_buffer.speech_started"]
    assert len(starts) == 2  # the question, then the barge-in
    stale = [i for i, e in enumerate(c.events)
             if e["type"] == "response.audio.delta" and e["response_id"] == rid and i > starts[1]]  # fmt: skip
    assert stale == []
    sent = c.audio_of(rid).size / RATE
    assert 0 < sent < answer_speech[0].size / answer_speech[1] - 1  # it really was cut short
    assert done2["response"]["status"] == "completed" and done2["response"]["id"] != rid
    assert engine.closed == engine.opened == 2
    # the interrupted exchange stays in the session's history: what was heard, and what was said before the cut
    assert engine.histories[1] == [("user", "fake question"), ("assistant", "Fake answer. ")]


def _echo_run(answer_speech, question, guard: bool):
    audio, rate = answer_speech
    engine = FakeEngine(audio[: 5 * rate], rate)

    async def go(url):
        c = await Client.connect(url)
        await c.send({"type": "session.update", "session": {"echo_guard": guard}})
        await c.send_audio(question)
        first = await c.wait_for("response.audio.delta")
        rid = first["response_id"]
        await c.wait_for("response.done")  # the fake engine is fast: all audio is sent, playing goes on
        played = c.audio_of(rid)
        # What the microphone hears: our answer coming back from the speaker, 150 ms later, at half the level.
        echo = np.concatenate([silence(0.15), 0.5 * played, silence(1.0)])
        await c.send_audio(echo, realtime=True)
        await asyncio.sleep(0.5)
        stats = dict(session_of(app).stats)
        await c.close()
        return c, stats

    with running_server(ServerConfig(), engine) as (url, app):
        return run(go(url))


def test_own_echo_does_not_trigger_a_turn(answer_speech, question):
    c, stats = _echo_run(answer_speech, question, guard=True)
    assert len(c.of("input_audio_buffer.speech_started")) == 1
    assert len(c.of("response.created")) == 1
    assert stats.get("echo_frames", 0) > 5


def test_echo_control_without_guard_does_trigger(answer_speech, question):
    c, stats = _echo_run(answer_speech, question, guard=False)
    assert len(c.of("input_audio_buffer.speech_started")) >= 2  # the same input is heard as speech


def _backchannel_run(answer_speech, question, backchannel_ms: int | None):
    engine = FakeEngine(*answer_speech, chunk_s=0.5, pause_s=0.1)
    mm = np.concatenate([speech("uh huh"), silence(1.2)])

    async def go(url):
        c = await Client.connect(url)
        if backchannel_ms is not None:
            await c.send({"type": "session.update", "session": {"backchannel_max_ms": backchannel_ms}})
        await c.send_audio(question)
        first = await c.wait_for("response.audio.delta")
        await asyncio.sleep(0.8)
        await c.send_audio(mm, realtime=True)
        done = await c.wait_for("response.done", where=lambda e: e["response"]["id"] == first["response_id"])
        await asyncio.sleep(0.3)
        stats = dict(session_of(app).stats)
        await c.close()
        return c, done, stats

    with running_server(ServerConfig(), engine) as (url, app):
        return run(go(url))


def test_backchannel_does_not_cancel_the_answer(answer_speech, question):
    c, done, stats = _backchannel_run(answer_speech, question, None)
    assert done["response"]["status"] == "completed"
    assert len(c.of("input_audio_buffer.speech_started")) == 1 and len(c.of("response.created")) == 1
    assert stats.get("backchannels", 0) == 1
    rid = done["response"]["id"]
    assert c.audio_of(rid).size / RATE == pytest.approx(answer_speech[0].size / answer_speech[1], abs=0.05)


def test_backchannel_control_cancels_when_configured(answer_speech, question):
    c, done, stats = _backchannel_run(answer_speech, question, 0)
    assert len(c.of("input_audio_buffer.speech_started")) == 2  # "uh huh" counted as a barge-in
    assert stats.get("barge_ins", 0) == 1


@pytest.mark.parametrize("silence_ms, turns", [(400, 2), (1500, 1)])
def test_end_of_turn_silence_is_configurable(answer_speech, silence_ms, turns):
    engine = FakeEngine(*answer_speech)
    # two phrases with an 800 ms pause between them: two turns for a short silence setting, one for a long one
    audio = np.concatenate([silence(0.3), speech("I would like to know"), silence(0.8),
                            speech("the capital of France."), silence(2.0)])  # fmt: skip

    async def go(url):
        c = await Client.connect(url)
        td = {"type": "server_vad", "silence_duration_ms": silence_ms}
        await c.send({"type": "session.update", "session": {"turn_detection": td}})
        await c.send_audio(audio)
        await c.wait_for("response.done", count=turns)
        await asyncio.sleep(0.5)
        await c.close()
        return c

    with running_server(ServerConfig(), engine) as (url, app):
        c = run(go(url))
    assert len(c.of("input_audio_buffer.committed")) == turns


def test_speculative_answer_is_dropped_when_the_user_goes_on(answer_speech):
    engine = FakeEngine(*answer_speech)
    c, done, stats = speculative_run(engine)
    assert stats.get("speculations_dropped", 0) >= 1 and engine.opened >= 2  # it did start one, and dropped it
    assert len(c.of("input_audio_buffer.committed")) == 1 and len(c.of("response.created")) == 1
    assert done["response"]["status"] == "completed"
    kinds = [e["type"] for e in c.events]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")  # nothing leaked early
    assert engine.heard[-1] > 16000 * 2.2  # the answer that went out heard both halves of the question
    assert engine.opened == stats["speculations_dropped"] + 1  # the answer sent was itself a speculation, released
    assert engine.closed == engine.opened
