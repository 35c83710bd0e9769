"""The OpenAI Realtime API subset over one WebSocket: client JSON events in, session events out as JSON.

Supported client events: session.update, input_audio_buffer.append/commit/clear, response.create/cancel.
Anything else gets an `error` event (code `unknown_event`), as does every malformed message; none closes the
socket except a failed API key, the session limit, or a client that stops reading for good.

Outgoing messages wait in a bounded outbox. Audio deltas are refused once it holds `outbox_size` messages: the
answer in progress is then cancelled with an `error` (code `slow_consumer`) instead of dropping audio from the
middle of it. Control events are always queued; if the outbox reaches twice its size the client is not reading
at all and the socket is closed (1013).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import itertools
import json
from dataclasses import replace

from starlette.websockets import WebSocket, WebSocketDisconnect

from vivavoce.engine.base import ResponseOptions
from vivavoce.engine.session import (
    AudioOut,
    InputCleared,
    InputCommitted,
    ResponseFinished,
    ResponseStarted,
    Session,
    SessionConfig,
    SessionError,
    SpeechStarted,
    SpeechStopped,
    TextOut,
    UserTranscriptDone,
)
from vivavoce.errors import AudioError, VivavoceError

_event_ids = itertools.count(1)
VOICES = ("joe",)  # the cascade speaks with Piper's joe; other engines may know more


class ProtocolError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def error_event(code: str, message: str, client_event_id: str | None = None) -> dict:
    err = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
    if client_event_id:
        err["event_id"] = client_event_id
    return {"type": "error", "error": err}


class Outbox:
    """Bounded queue of outgoing messages, drained by one sender task."""

    def __init__(self, size: int):
        self.size = size
        self.items: collections.deque[tuple[str | None, dict]] = collections.deque()  # (response id of audio, msg)
        self.ready = asyncio.Event()
        self.overflow = False

    def put(self, msg: dict, audio_of: str | None = None) -> bool:
        if audio_of is not None and len(self.items) >= self.size:
            return False
        if len(self.items) >= 2 * self.size:
            self.overflow = True  # not reading at all: the connection is closed
            return False
        self.items.append((audio_of, msg))
        self.ready.set()
        return True

    def purge(self, response_id: str) -> int:
        """Drop queued audio of a cancelled answer: once cancelled, none of it may reach the client."""
        keep = [(r, m) for r, m in self.items if r != response_id]
        dropped = len(self.items) - len(keep)
        self.items = collections.deque(keep)
        return dropped


def session_json(cfg: SessionConfig, session_id: str, voice: str | None) -> dict:
    t = cfg.turns
    return {
        "id": session_id,
        "object": "realtime.session",
        "modalities": ["audio", "text"],
        "voice": voice or VOICES[0],
        "speed": cfg.options.speed,
        "instructions": cfg.options.instructions or "",
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "turn_detection": None if not cfg.server_vad else {
            "type": "server_vad", "threshold": t.threshold, "silence_duration_ms": t.silence_ms,
            "prefix_padding_ms": t.prefix_padding_ms, "create_response": cfg.create_response,
            "interrupt_response": cfg.barge_in,
        },
        "max_response_output_tokens": cfg.options.max_answer_tokens,
        # vivavoce extensions
        "emotion": cfg.options.emotion,
        "emotion_intensity": cfg.options.emotion_intensity,
        "input_sample_rate": cfg.input_rate,
        "output_sample_rate": cfg.output_rate,
        "backchannel_max_ms": t.backchannel_max_ms,
        "min_speech_ms": t.min_speech_ms,
        "echo_guard": t.echo_guard,
        "speculative_ms": t.speculative_ms,
    }  # fmt: skip


def _num(d: dict, key: str, lo: float, hi: float, cast=float):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ProtocolError("invalid_value", f"{key} must be a number in {lo:g}..{hi:g}, got {v!r}")
    return cast(v)


def _bool(d: dict, key: str) -> bool:
    if not isinstance(d[key], bool):
        raise ProtocolError("invalid_value", f"{key} must be true or false, got {d[key]!r}")
    return d[key]


def apply_options(options: ResponseOptions, s: dict) -> ResponseOptions:
    changes = {}
    if "voice" in s:
        if s["voice"] is not None and not isinstance(s["voice"], str):
            raise ProtocolError("invalid_value", "voice must be a string")
        changes["voice"] = s["voice"]
    if "speed" in s:
        changes["speed"] = _num(s, "speed", 0.5, 2.0)
    if "emotion" in s:
        if s["emotion"] is not None and not isinstance(s["emotion"], str):
            raise ProtocolError("invalid_value", "emotion must be a string or null")
        changes["emotion"] = s["emotion"] or None
    if "emotion_intensity" in s:
        changes["emotion_intensity"] = _num(s, "emotion_intensity", 0.0, 1.0)
    if "instructions" in s:
        if s["instructions"] is not None and not isinstance(s["instructions"], str):
            raise ProtocolError("invalid_value", "instructions must be a string")
        changes["instructions"] = s["instructions"] or None
    if "max_response_output_tokens" in s:
        v = s["max_response_output_tokens"]
        changes["max_answer_tokens"] = 4096 if v == "inf" else _num(s, "max_response_output_tokens", 1, 4096, int)
    return replace(options, **changes)


def apply_session_update(cfg: SessionConfig, s: dict) -> SessionConfig:
    """A new SessionConfig with the fields of a `session.update` applied; ProtocolError on a bad value."""
    if not isinstance(s, dict):
        raise ProtocolError("invalid_value", "session must be an object")
    for key in ("input_audio_format", "output_audio_format"):
        if key in s and s[key] != "pcm16":
            raise ProtocolError("invalid_value", f"{key} {s[key]!r} is not supported: only pcm16")
    turns = cfg.turns
    server_vad, create, barge = cfg.server_vad, cfg.create_response, cfg.barge_in
    if "turn_detection" in s:
        td = s["turn_detection"]
        if td is None:
            server_vad = False
        elif not isinstance(td, dict) or td.get("type", "server_vad") != "server_vad":
            raise ProtocolError("invalid_value", "turn_detection must be null or {\"type\": \"server_vad\", ...}")
        else:
            server_vad = True
            if "threshold" in td:
                turns = replace(turns, threshold=_num(td, "threshold", 0.05, 0.99))
            if "silence_duration_ms" in td:
                turns = replace(turns, silence_ms=_num(td, "silence_duration_ms", 96, 5000, int))
            if "prefix_padding_ms" in td:
                turns = replace(turns, prefix_padding_ms=_num(td, "prefix_padding_ms", 0, 2000, int))
            if "create_response" in td:
                create = _bool(td, "create_response")
            if "interrupt_response" in td:
                barge = _bool(td, "interrupt_response")
    if "backchannel_max_ms" in s:
        turns = replace(turns, backchannel_max_ms=_num(s, "backchannel_max_ms", 0, 5000, int))
    if "speculative_ms" in s:
        turns = replace(turns, speculative_ms=_num(s, "speculative_ms", 0, 5000, int))
    if "min_speech_ms" in s:
        turns = replace(turns, min_speech_ms=_num(s, "min_speech_ms", 0, 2000, int))
    if "echo_guard" in s:
        turns = replace(turns, echo_guard=_bool(s, "echo_guard"))
    rates = {}
    for key, field in (("input_sample_rate", "input_rate"), ("output_sample_rate", "output_rate")):
        if key in s:
            rates[field] = _num(s, key, 8000, 48000, int)
    options = apply_options(cfg.options, s)
    return replace(cfg, server_vad=server_vad, create_response=create, barge_in=barge, turns=turns,
                   options=options, **rates)  # fmt: skip


class RealtimeConnection:
    """One client: its session, its outbox and the sender task that writes to the socket."""

    def __init__(self, ws: WebSocket, engine, base: SessionConfig, limits, engine_lock=None):
        self.ws = ws
        self.limits = limits
        self.id = f"sess_{next(_event_ids):06d}"
        self.outbox = Outbox(limits.outbox_size)
        self.session = Session(engine, self.on_event, base, engine_lock)
        self.items: dict[str, dict] = {}  # response id -> its assistant item (for response.done)

    def send(self, event: dict, audio_of: str | None = None) -> bool:
        event = {"event_id": f"event_{next(_event_ids):08d}", **event}
        return self.outbox.put(event, audio_of)

    def on_event(self, ev) -> bool:
        if isinstance(ev, AudioOut):
            delta = base64.b64encode(ev.pcm16).decode("ascii")
            return self.send({"type": "response.audio.delta", "response_id": ev.response_id, "item_id": ev.item_id,
                              "output_index": 0, "content_index": 0, "delta": delta}, audio_of=ev.response_id)  # fmt: skip
        if isinstance(ev, SpeechStarted):
            self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": ev.audio_start_ms,
                       "item_id": ev.item_id})  # fmt: skip
        elif isinstance(ev, SpeechStopped):
            self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.audio_end_ms,
                       "item_id": ev.item_id})  # fmt: skip
        elif isinstance(ev, InputCommitted):
            self.send({"type": "input_audio_buffer.committed", "previous_item_id": ev.previous_item_id,
                       "item_id": ev.item_id})  # fmt: skip
            item = {"id": ev.item_id, "object": "realtime.item", "type": "message", "status": "completed",
                    "role": "user", "content": [{"type": "input_audio", "transcript": None}]}  # fmt: skip
            self.send({"type": "conversation.item.created", "previous_item_id": ev.previous_item_id, "item": item})
        elif isinstance(ev, InputCleared):
            self.send({"type": "input_audio_buffer.cleared"})
        elif isinstance(ev, UserTranscriptDone):
            self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": ev.item_id,
                       "content_index": 0, "transcript": ev.text})  # fmt: skip
        elif isinstance(ev, ResponseStarted):
            item = {"id": ev.item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}  # fmt: skip
            self.items[ev.response_id] = item
            self.send({"type": "response.created", "response": {"id": ev.response_id, "object": "realtime.response",
                       "status": "in_progress", "output": []}})  # fmt: skip
            self.send({"type": "response.output_item.added", "response_id": ev.response_id, "output_index": 0,
                       "item": item})  # fmt: skip
            self.send({"type": "conversation.item.created", "item": item})
        elif isinstance(ev, TextOut):
            self.send({"type": "response.audio_transcript.delta", "response_id": ev.response_id,
                       "item_id": ev.item_id, "output_index": 0, "content_index": 0, "delta": ev.text})  # fmt: skip
        elif isinstance(ev, ResponseFinished):
            self._finished(ev)
        elif isinstance(ev, SessionError):
            self.send(error_event(ev.code, ev.message))
        return True

    def _finished(self, ev: ResponseFinished) -> None:
        if ev.status == "cancelled":
            self.outbox.purge(ev.response_id)
        item = self.items.pop(ev.response_id, {"id": ev.item_id, "role": "assistant", "type": "message"})
        item = {**item, "status": "completed" if ev.status == "completed" else "incomplete",
                "content": [{"type": "audio", "transcript": ev.text}]}  # fmt: skip
        ids = {"response_id": ev.response_id, "item_id": ev.item_id, "output_index": 0, "content_index": 0}
        self.send({"type": "response.audio_transcript.done", **ids, "transcript": ev.text})
        self.send({"type": "response.audio.done", **ids})
        self.send({"type": "response.output_item.done", "response_id": ev.response_id, "output_index": 0,
                   "item": item})  # fmt: skip
        details = None if ev.reason is None else {"type": ev.status, "reason": ev.reason}
        self.send({"type": "response.done", "response": {
            "id": ev.response_id, "object": "realtime.response", "status": ev.status, "status_details": details,
            "output": [item], "vivavoce": ev.metrics}})  # fmt: skip

    async def sender(self) -> None:
        while True:
            await self.outbox.ready.wait()
            while self.outbox.items:
                if self.outbox.overflow:
                    await self.ws.close(code=1013, reason="client is not reading")
                    return
                _, msg = self.outbox.items.popleft()
                await self.ws.send_text(json.dumps(msg))
            self.outbox.ready.clear()

    async def run(self) -> None:
        self.send({"type": "session.created", "session": session_json(self.session.config, self.id, None)})
        sender = asyncio.create_task(self.sender(), name=f"vivavoce-sender-{self.id}")
        try:
            while not sender.done():
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                self.handle(msg.get("text"), msg.get("bytes"))
                if self.outbox.overflow:
                    await self.ws.close(code=1013, reason="client is not reading")
                    break
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away
        finally:
            await self.session.close()
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):
                pass

    def handle(self, text: str | None, data: bytes | None) -> None:
        client_id = None
        try:
            if text is None:
                raise ProtocolError("invalid_message", "binary frames are not supported: send JSON text events")
            if len(text) > self.limits.max_message_bytes:
                raise ProtocolError(
                    "message_too_large", f"message of {len(text)} bytes exceeds {self.limits.max_message_bytes}"
                )
            try:
                event = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise ProtocolError("invalid_json", "message is not valid JSON") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ProtocolError("invalid_event", "an event must be a JSON object with a string `type`")
            client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            self.dispatch(event)
        except ProtocolError as e:
            self.send(error_event(e.code, str(e), client_id))
        except VivavoceError as e:
            code, _, msg = str(e).partition(": ")
            if not msg or " " in code:
                code, msg = ("invalid_audio_format" if isinstance(e, AudioError) else "invalid_request"), str(e)
            self.send(error_event(code, msg, client_id))
        except Exception as e:  # a bug: reported to this client, the server and the session go on
            self.send(error_event("server_error", f"{type(e).__name__}: {e}", client_id))

    def dispatch(self, event: dict) -> None:
        kind, s = event["type"], self.session
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if not isinstance(audio, str):
                raise ProtocolError("invalid_audio", "input_audio_buffer.append needs `audio`: base64 pcm16")
            try:
                pcm = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("invalid_audio", "audio is not valid base64") from None
            s.append_audio(pcm)
        elif kind == "session.update":
            cfg = apply_session_update(s.config, event.get("session", {}))
            s.configure(cfg)
            voice = event.get("session", {}).get("voice")
            self.send({"type": "session.updated", "session": session_json(cfg, self.id, voice)})
        elif kind == "input_audio_buffer.commit":
            s.commit()
        elif kind == "input_audio_buffer.clear":
            s.clear()
        elif kind == "response.create":
            r = event.get("response") or {}
            if not isinstance(r, dict):
                raise ProtocolError("invalid_value", "response must be an object")
            s.create_response(apply_options(s.config.options, r), speech_end=None)
        elif kind == "response.cancel":
            if not s.cancel_response("client_cancelled"):
                raise ProtocolError("response_cancel_not_active", "there is no response in progress to cancel")
        else:
            raise ProtocolError("unknown_event", f"unsupported event type {kind[:80]!r}")

