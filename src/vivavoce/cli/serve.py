"""`vivavoce serve`: the live dialogue server and its web page (http://127.0.0.1:8765/ by default)."""

from __future__ import annotations

import argparse
import os


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve live spoken dialogue: Realtime WebSocket API, HTTP, web page")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", default=os.environ.get("VIVAVOCE_API_KEY"),
                   help="require this key (Bearer header or ?api_key=); default: $VIVAVOCE_API_KEY or none")  # fmt: skip
    p.add_argument("--engine", default="cascade", help="dialogue engine by name (see vivavoce.engine.registry)")
    p.add_argument("--max-sessions", type=int, default=8)
    p.add_argument("--engine-concurrency", type=int, default=1,
                   help="answers computed at once; the rest wait (on 2 cores, 1 gives the lowest latency)")  # fmt: skip
    p.add_argument("--silence-ms", type=int, default=500, help="silence that ends a user turn")
    p.add_argument("--backchannel-ms", type=int, default=600,
                   help="user speech shorter than this during an answer does not interrupt it (0: any speech does)")  # fmt: skip
    p.add_argument("--speculative-ms", type=int, default=0,
                   help="start answering after this much silence, out of sight until --silence-ms confirms (0: off)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vivavoce.engine.registry import load_engine
    from vivavoce.engine.session import SessionConfig
    from vivavoce.engine.turns import TurnConfig
    from vivavoce.errors import VivavoceError
    from vivavoce.serve.app import ServerConfig, serve

    if not 0 < args.port < 65536:
        raise VivavoceError(f"--port {args.port} is not a TCP port")
    if args.engine_concurrency < 1:
        raise VivavoceError("--engine-concurrency must be at least 1")
    if args.max_sessions < 1:
        raise VivavoceError("--max-sessions must be at least 1")
    turns = replace(TurnConfig(), silence_ms=args.silence_ms, backchannel_max_ms=args.backchannel_ms,
                    speculative_ms=args.speculative_ms)  # fmt: skip
    config = ServerConfig(
        host=args.host, port=args.port, api_key=args.api_key or None, engine=args.engine,
        max_sessions=args.max_sessions, engine_concurrency=args.engine_concurrency, session=SessionConfig(turns=turns),
    )  # fmt: skip
    engine = load_engine(args.engine)  # before listening: the first caller should not wait for model loads
    print(f"vivavoce: serving {args.engine} on http://{args.host}:{args.port}/ (WebSocket /v1/realtime)", flush=True)
    serve(config, engine)
    return 0
