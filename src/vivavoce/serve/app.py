"""`vivavoce serve`: the live dialogue server (FastAPI + uvicorn).

- `WS /v1/realtime`: OpenAI Realtime API subset, pcm16 audio (see `realtime.py`);
- `POST /v1/audio/chat`: an audio file in (multipart field `file`, or the raw body), a WAV answer out;
- `GET /health`; `GET /` the web page (static files, no CDN).

Binds 127.0.0.1 unless told otherwise. With an API key set, every request must carry it as
`Authorization: Bearer KEY` or `?api_key=KEY` (browsers cannot set WebSocket headers).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from vivavoce.engine.session import SessionConfig

STATIC = Path(__file__).parent / "static"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    engine: str = "cascade"
    max_sessions: int = 8
    max_message_bytes: int = 1 << 20  # one JSON event; 1 MiB is ~16 s of base64 pcm16 at 24 kHz
    outbox_size: int = 400  # outgoing messages per connection (~40 s of audio at 100 ms a delta)
    engine_concurrency: int = 1  # answers (and live turns) computed at once, the rest wait: 2 cores for everything
    max_upload_bytes: int = 20 << 20
    max_upload_s: float = 60.0
    session: SessionConfig = field(default_factory=SessionConfig)


def _authorized(config: ServerConfig, headers, query) -> bool:
    if not config.api_key:
        return True
    given = query.get("api_key") or ""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), config.api_key.encode())


def create_app(config: ServerConfig | None = None, engine=None):
    from vivavoce.serve.realtime import RealtimeConnection, error_event

    config = config or ServerConfig()
    app = FastAPI(title="vivavoce", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.engine = engine
    app.state.connections = {}  # websocket -> RealtimeConnection (None while the engine loads)
    app.state.engine_lock = threading.BoundedSemaphore(max(1, config.engine_concurrency))

    def get_engine():
        if app.state.engine is None:
            from vivavoce.engine.registry import load_engine

            app.state.engine = load_engine(config.engine)
        return app.state.engine

    app.state.get_engine = get_engine

    def error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse(error_event(code, message), status_code=status)

    @app.get("/health")
    async def health():
        eng = app.state.engine
        return {"status": "ok", "engine": getattr(eng, "name", config.engine), "engine_loaded": eng is not None,
                "sessions": len(app.state.connections), "max_sessions": config.max_sessions}  # fmt: skip

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        await ws.accept()
        if not _authorized(config, ws.headers, ws.query_params):
            await ws.send_json(error_event("invalid_api_key", "missing or wrong API key"))
            await ws.close(code=1008)
            return
        if len(app.state.connections) >= config.max_sessions:
            await ws.send_json(error_event("session_limit", f"the server holds {config.max_sessions} sessions"))
            await ws.close(code=1013)
            return
        app.state.connections[ws] = None
        try:
            try:
                eng = await asyncio.to_thread(get_engine)
            except Exception as e:  # a missing model or an unknown engine name: say so, keep serving
                await ws.send_json(error_event("engine_unavailable", f"{type(e).__name__}: {e}"))
                await ws.close(code=1011)
                return
            # its own Silero VAD loads here: off the loop, so other sessions do not stall
            conn = app.state.connections[ws] = await asyncio.to_thread(
                RealtimeConnection, ws, eng, config.session, config, app.state.engine_lock
            )
            await conn.run()
        finally:
            app.state.connections.pop(ws, None)

    @app.post("/v1/audio/chat")
    async def audio_chat(request: Request, speed: float = 1.0, voice: str | None = None, emotion: str | None = None):
        from vivavoce.audio.io import AudioLimits, read_audio
        from vivavoce.engine.base import INPUT_RATE, ResponseOptions, collect
        from vivavoce.errors import VivavoceError

        if not _authorized(config, request.headers, request.query_params):
            return error(401, "invalid_api_key", "missing or wrong API key")
        if not 0.5 <= speed <= 2.0:
            return error(400, "invalid_value", f"speed {speed} is outside 0.5..2.0")
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return error(400, "invalid_request", "Content-Length is not a number")
        if length > config.max_upload_bytes:
            return error(413, "upload_too_large", f"upload of {length} bytes exceeds {config.max_upload_bytes}")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return error(400, "invalid_audio", "multipart upload needs an audio file in the field `file`")
            data = await upload.read()
        else:
            data = bytearray()
            async for piece in request.stream():  # without a Content-Length, stop reading at the limit
                data += piece
                if len(data) > config.max_upload_bytes:
                    break
            data = bytes(data)
        if len(data) > config.max_upload_bytes:
            return error(413, "upload_too_large", f"upload of {len(data)} bytes exceeds {config.max_upload_bytes}")

        def answer():
            with tempfile.NamedTemporaryFile(suffix=".audio") as tmp:
                tmp.write(data)
                tmp.flush()
                try:
                    audio = read_audio(tmp.name, INPUT_RATE, AudioLimits(max_seconds=config.max_upload_s))
                except VivavoceError as e:
                    raise VivavoceError(str(e).replace(tmp.name, "upload")) from None
            with app.state.engine_lock:
                opts = ResponseOptions(speed=speed, voice=voice, emotion=emotion)
                return collect(get_engine().respond(audio, [], opts))

        try:
            result = await asyncio.to_thread(answer)
        except VivavoceError as e:
            return error(400, "invalid_audio", str(e))
        if result.audio.size == 0:
            return error(500, "no_answer", "the engine produced no spoken answer")
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, np.clip(result.audio, -1, 1), result.rate, format="WAV", subtype="PCM_16")
        headers = {"X-Vivavoce-Heard": quote(result.user_text or ""), "X-Vivavoce-Answer": quote(result.text)}
        return Response(buf.getvalue(), media_type="audio/wav", headers=headers)

    return app


def uvicorn_config(app, config: ServerConfig):
    import uvicorn

    # uvicorn drops a frame above ws_max_size by closing the socket; keep it above our own limit so an oversized
    # event is answered with an `error` event first, and only absurd frames close the connection.
    return uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                          ws_max_size=4 * config.max_message_bytes, ws_ping_interval=20, ws_ping_timeout=20)  # fmt: skip


def serve(config: ServerConfig, engine=None) -> None:
    import uvicorn

    uvicorn.Server(uvicorn_config(create_app(config, engine), config)).run()
