"""The Realtime WebSocket protocol and its robustness, against an in-process server on 127.0.0.1.

The engine here is a fake (tests only) so that these run in seconds; the real cascade is driven end to end in
test_serve_e2e.py. The VAD, resampling, echo guard and all protocol code are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import threading
import time
import urllib.request
import weakref

import numpy as np
import pytest
from conftest_serve import RATE, Client, FakeEngine, answer_speech, run, running_server, silence, speech  # noqa: F401

from vivavoce.serve.app import ServerConfig


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return np.concatenate([silence(0.3), speech("What is the capital of France?"), silence(0.9)])


def engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vivavoce-resp")]


def test_spoken_turn_is_detected_and_answered(answer_speech, question):
    audio, rate = answer_speech
    engine = FakeEngine(audio, rate)

    async def go(url):
        c = await Client.connect(url)
        created = await c.wait_for("session.created")
        assert created["session"]["turn_detection"]["type"] == "server_vad"
        await c.send_audio(question)
        done = await c.wait_for("response.done")
        await c.close()
        return c, done

    with running_server(ServerConfig(), engine) as (url, app):
        c, done = run(go(url))
    kinds = [e["type"] for e in c.events]
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "response.created", "response.audio.delta", "response.done"]  # fmt: skip
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    assert done["response"]["status"] == "completed"
    rid = done["response"]["id"]
    out = c.audio_of(rid)
    assert abs(out.size / RATE - audio.size / rate) < 0.05  # all of the answer, resampled to 24 kHz
    assert "".join(e["delta"] for e in c.of("response.audio_transcript.delta")).strip() == "Fake answer."
    user = [e for e in c.of("conversation.item.created") if e["item"]["role"] == "user"]
    assert len(user) == 1
    stopped = c.of("input_audio_buffer.speech_stopped")[0]
    assert 1800 < stopped["audio_end_ms"] < 2700  # 0.3 s lead-in + ~2 s of speech
    assert engine.heard and 1.8 * 16000 < engine.heard[0] < 3.5 * 16000  # the turn went to the engine at 16 kHz
    assert engine.closed == engine.opened == 1


def test_bad_messages_get_error_events_and_the_session_survives(answer_speech):
    engine = FakeEngine(*answer_speech)
    cases = [
        ("not json {", "invalid_json"),
        (json.dumps([1, 2]), "invalid_event"),
        (json.dumps({"type": "no.such.event", "event_id": "c1"}), "unknown_event"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}), "invalid_audio"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
         "invalid_audio_format"),
        (json.dumps({"type": "input_audio_buffer.append"}), "invalid_audio"),
        (json.dumps({"type": "session.update", "session": {"speed": 9}}), "invalid_value"),
        (json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}), "invalid_value"),
        (json.dumps({"type": "session.update", "session": {"turn_detection": {"type": "semantic"}}}),
         "invalid_value"),
        (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        (json.dumps({"type": "response.create"}), "conversation_empty"),
        (json.dumps({"type": "response.cancel"}), "response_cancel_not_active"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 300_000}), "message_too_large"),
        (b"\x00\x01binary", "invalid_message"),
    ]  # fmt: skip

    async def go(url):
        c = await Client.connect(url)
        await c.wait_for("session.created")
        for n, (msg, code) in enumerate(cases, 1):
            await c.ws.send(msg)
            err = await c.wait_for("error", timeout=10, count=n)
            assert err["error"]["code"] == code, (msg[:60], err)
        assert c.of("error")[2]["error"]["event_id"] == "c1"  # the client's event id is echoed back
        await c.send({"type": "session.update", "session": {"speed": 1.5, "voice": "joe", "emotion": "happy"}})
        upd = await c.wait_for("session.updated")
        assert upd["session"]["speed"] == 1.5 and upd["session"]["emotion"] == "happy"
        await c.close()

    cfg = ServerConfig(max_message_bytes=200_000)
    with running_server(cfg, engine) as (url, app):
        run(go(url))
        health = json.loads(urllib.request.urlopen(f"http://{url}/health", timeout=10).read())
    assert health["status"] == "ok" and health["sessions"] == 0


def test_manual_turns_commit_and_response_create(answer_speech, question):
    engine = FakeEngine(*answer_speech)

    async def go(url):
        c = await Client.connect(url)
        await c.send({"type": "session.update", "session": {"turn_detection": None, "input_sample_rate": 16000}})
        await c.wait_for("session.updated")
        q16 = np.interp(np.arange(0, question.size, 1.5), np.arange(question.size), question).astype(np.float32)
        await c.send_audio(q16, rate=16000)
        await c.send({"type": "input_audio_buffer.commit"})
        await c.wait_for("input_audio_buffer.committed")
        assert not c.of("input_audio_buffer.speech_started")  # no server VAD in manual mode
        await c.send({"type": "response.create", "response": {"speed": 1.2}})
        done = await c.wait_for("response.done")
        await c.close()
        return done

    with running_server(ServerConfig(), engine) as (url, app):
        done = run(go(url))
    assert done["response"]["status"] == "completed"
    assert engine.heard[0] == pytest.approx(question.size / 1.5, rel=0.01)


def test_session_limit_refuses_extra_sessions(answer_speech):
    async def go(url):
        a, b = await Client.connect(url), await Client.connect(url)
        await a.wait_for("session.created")
        await b.wait_for("session.created")
        c = await Client.connect(url)
        err = await c.wait_for("error", timeout=10)
        assert err["error"]["code"] == "session_limit"
        await a.close()
        await asyncio.sleep(0.3)
        d = await Client.connect(url)
        await d.wait_for("session.created")  # a freed slot is usable again
        for x in (b, d):
            await x.close()

    with running_server(ServerConfig(max_sessions=2), FakeEngine(*answer_speech)) as (url, app):
        run(go(url))


def test_api_key_is_required_when_set(answer_speech):
    async def go(url):
        c = await Client.connect(url)
        err = await c.wait_for("error", timeout=10)
        assert err["error"]["code"] == "invalid_api_key"
        ok = await Client.connect(url, additional_headers={"Authorization": "Bearer s3cret"})
        await ok.wait_for("session.created")
        await ok.close()
        ok = await Client.connect(url, path="/v1/realtime?api_key=s3cret")  # query form, as browsers must use
        await ok.wait_for("session.created")
        await ok.close()

    with running_server(ServerConfig(api_key="s3cret"), FakeEngine(*answer_speech)) as (url, app):
        run(go(url))


def test_disconnect_mid_answer_cancels_generation_and_frees_the_thread(answer_speech, question):
    engine = FakeEngine(*answer_speech, chunk_s=0.5, pause_s=0.3)

    refs = []

    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        await c.wait_for("response.audio.delta")
        assert engine_threads()
        refs.append(weakref.ref(next(iter(app.state.connections.values())).session))
        await c.close()

    with running_server(ServerConfig(), engine) as (url, app):
        run(go(url))
        deadline = time.monotonic() + 10
        while (engine_threads() or app.state.connections) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not engine_threads() and not app.state.connections
        assert engine.closed == engine.opened == 1
        gc.collect()
        assert refs[0]() is None  # the session, its VAD and buffers are freed
        chunks = int(np.ceil(answer_speech[0].size / (0.5 * answer_speech[1])))
        assert engine.heard and chunks > 4  # the answer had far more to say than it was let to


def test_slow_reader_gets_the_answer_cancelled_not_unbounded_memory(question):
    noise = (np.random.default_rng(0).standard_normal(16000 * 240) * 0.1).astype(np.float32)
    engine = FakeEngine(noise, 16000, chunk_s=10)  # 4 minutes of loud audio, produced at once

    async def go(url):
        c = await Client.connect(url, read=False, max_queue=1)
        await c.send({"type": "session.update", "session": {"output_sample_rate": 48000}})
        await c.send_audio(question)
        await asyncio.sleep(6)  # not reading while the server produces ~20 MB of deltas
        conn = next(iter(app.state.connections.values()))
        assert len(conn.outbox.items) <= 2 * conn.outbox.size
        c.reader = asyncio.create_task(c._read())
        err = await c.wait_for("error", timeout=60, where=lambda e: e["error"]["code"] == "slow_consumer")
        done = await c.wait_for("response.done")
        assert done["response"]["status"] == "cancelled"
        assert c.events.index(err) < c.events.index(done)
        await c.close()

    cfg = ServerConfig(outbox_size=50)
    with running_server(cfg, engine) as (url, app):
        run(go(url))
        health = json.loads(urllib.request.urlopen(f"http://{url}/health", timeout=10).read())
    assert health["status"] == "ok"


def test_audio_chat_http(answer_speech, question, tmp_path):
    import io

    import soundfile as sf

    engine = FakeEngine(*answer_speech)
    wav = tmp_path / "q.wav"
    sf.write(wav, question, RATE)
    with running_server(ServerConfig(), engine) as (url, app):
        req = urllib.request.Request(f"http://{url}/v1/audio/chat?speed=1.1", data=wav.read_bytes(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            out, rate = sf.read(io.BytesIO(r.read()))
            assert r.headers["Content-Type"] == "audio/wav"
        assert rate == answer_speech[1] and abs(out.size - answer_speech[0].size) <= 1
        bad = urllib.request.Request(f"http://{url}/v1/audio/chat", data=b"this is not audio", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=30)
        body = e.value.read().decode()
        assert e.value.code == 400 and "\n" not in body
        assert json.loads(body)["error"]["message"].startswith("upload: not a readable audio file")


def test_absurdly_large_frame_closes_only_that_connection(answer_speech):
    import websockets

    async def go(url):
        c = await Client.connect(url)
        await c.wait_for("session.created")
        try:
            await c.ws.send("x" * (5 << 20))  # above the transport's cap (4x the event limit)
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(c.reader, 20)  # the server closed this connection...
        assert c.ws.close_code == 1009
        d = await Client.connect(url)
        await d.wait_for("session.created")  # the server is fine
        await d.close()

    with running_server(ServerConfig(max_message_bytes=1 << 20), FakeEngine(*answer_speech)) as (url, app):
        run(go(url))


class _BrokenEngine:
    name, sample_rate = "broken", 16000

    def respond(self, audio, history=None, options=None):
        yield from ()
        raise RuntimeError("model exploded")


def test_engine_failure_is_an_error_event_not_a_dead_session(question):
    async def go(url):
        c = await Client.connect(url)
        await c.send_audio(question)
        done = await c.wait_for("response.done")
        err = c.of("error")[0]["error"]
        await c.send_audio(question)  # the session still takes turns
        await c.wait_for("response.done", count=2)
        await c.close()
        return done, err

    with running_server(ServerConfig(), _BrokenEngine()) as (url, app):
        done, err = run(go(url))
    assert done["response"]["status"] == "failed"
    assert err["code"] == "engine_error" and "model exploded" in err["message"]


def test_unknown_engine_is_an_error_event_and_the_server_stays_up():
    async def go(url):
        c = await Client.connect(url)
        err = await c.wait_for("error", timeout=10)
        assert err["error"]["code"] == "engine_unavailable" and "unknown engine 'nope'" in err["error"]["message"]

    with running_server(ServerConfig(engine="nope"), None) as (url, app):
        run(go(url))
        health = json.loads(urllib.request.urlopen(f"http://{url}/health", timeout=10).read())
    assert health["status"] == "ok" and not health["engine_loaded"]
