"""The `latr-sglang serve` command: flags, binding the port before the model loads, graceful shutdown."""

from __future__ import annotations

import argparse
import logging
import socket
from dataclasses import fields

from latr_sglang.server.core import ServerConfig

_HELP = {f.name: f.metadata.get("help", "") for f in fields(ServerConfig)}


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=30000, help="port to listen on (SGLang's default)")
    p.add_argument("--api-key", default=None, help=_HELP["api_key"])
    p.add_argument("--enable-weight-updates", action="store_true", help=_HELP["enable_weight_updates"])
    p.add_argument(
        "--weight-update-masters", default="", help=_HELP["weight_update_masters"] + " (comma-separated)"
    )
    p.add_argument("--weight-update-timeout", type=float, default=30.0, help=_HELP["weight_update_timeout_s"])
    p.add_argument("--max-body-mb", type=float, default=64.0, help=_HELP["max_body_mb"])
    p.add_argument("--max-n", type=int, default=64, help=_HELP["max_n"])
    p.add_argument("--shutdown-timeout", type=float, default=5.0, help=_HELP["shutdown_timeout_s"])
    p.add_argument("--served-model-name", default=None, help=_HELP["served_model_name"])
    p.add_argument("--stream-interval", type=int, default=1, help=_HELP["stream_interval"])
    p.add_argument(
        "--incremental-streaming-output", action="store_true", help=_HELP["incremental_streaming_output"]
    )


def resolve_masters(text: str) -> tuple[str, ...]:
    """--weight-update-masters as the server compares them: '*', IP addresses, and each hostname with the
    addresses it resolves to now (a trainer's master_address may name the host or its IP). An entry that is
    neither an address nor a name that resolves is a ValueError naming it."""
    import ipaddress

    masters: list[str] = []
    for entry in (m.strip() for m in text.split(",")):
        if not entry:
            continue
        masters.append(entry)
        if entry == "*":
            continue
        try:
            ipaddress.ip_address(entry)
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(entry, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise ValueError(
                f"--weight-update-masters: {entry!r} is not an IP address or a host name that resolves "
                f"({getattr(e, 'strerror', None) or e})"
            ) from None
        masters += [info[4][0] for info in infos]
    return tuple(dict.fromkeys(masters))


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    config = ServerConfig(
        api_key=args.api_key,
        enable_weight_updates=args.enable_weight_updates,
        weight_update_masters=resolve_masters(args.weight_update_masters),
        weight_update_timeout_s=args.weight_update_timeout,
        max_body_mb=args.max_body_mb,
        max_n=args.max_n,
        shutdown_timeout_s=args.shutdown_timeout,
        served_model_name=args.served_model_name,
        host=args.host,
        stream_interval=args.stream_interval,
        incremental_streaming_output=args.incremental_streaming_output,
    )
    config.validate()
    return config


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a busy port is a one-line error at once."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: must be in [0, 65535]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: cannot be resolved ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port}: {e.strerror} (is another server using the port?)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(args: argparse.Namespace, make_engine) -> int:
    config = config_from_args(args)
    sock = bind(args.host, args.port)
    try:
        from latr_sglang.server.app import create_app, graceful_server

        engine = make_engine(args)
    except BaseException:
        sock.close()
        raise
    if config.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("latr_sglang.server").warning(
            "serving on %s without --api-key: anyone who can reach the port can generate", args.host
        )
    # One info line per request, also at the default --log-level warning (a quieter level is kept).
    if args.log_level.lower() in ("warning", "info", "debug"):
        logging.getLogger("latr_sglang.server").setLevel(logging.INFO)
    port = sock.getsockname()[1]
    server = graceful_server(
        create_app(engine, config),
        log_level=args.log_level,
        access_log=False,  # our own request line carries the token counts
        proxy_headers=False,
    )
    print(f"serving {engine.model_path} on http://{args.host}:{port} (SGLang and OpenAI APIs)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        engine.close_sync()
        sock.close()
    return 0
