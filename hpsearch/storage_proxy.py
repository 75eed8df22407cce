"""``python -m hpsearch.storage_proxy DATABASE_URL``: optuna's gRPC storage proxy in front of a study database.

Hundreds of workers on one study would each hold database connections (PostgreSQL allows 100 by default);
through the proxy they hold one gRPC channel each, and the proxy a small pool. Workers then run with
``storage=grpc://HOST:PORT``. The proxy has no authentication, so it listens on 127.0.0.1 unless ``--host``
says otherwise: expose it only on a private network, or reach it through an SSH tunnel
(``ssh -N -L 13000:127.0.0.1:13000 proxy-host``).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys

from hpsearch.errors import HPSearchError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hpsearch.storage_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("storage", help="the study database, e.g. postgresql://user@db-host/hpsearch")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=13000, help="port to listen on (default: 13000)")
    args = parser.parse_args(argv)

    from hpsearch.backends.optuna.study import open_storage
    from hpsearch.config import redact_text
    from hpsearch.errors import ConfigError
    from hpsearch.imports import require

    try:
        if not args.storage.partition("://")[0] or args.storage.startswith("grpc://"):
            raise ConfigError(
                f"storage={redact_text(args.storage)}: the proxy fronts a database URL, e.g. postgresql://user@db-host/hpsearch"
            )
        require("grpc", "python -m hpsearch.storage_proxy", "grpcio", "grpc")
        _check_port_free(args.host, args.port)
        storage = open_storage(args.storage)
    except HPSearchError as error:
        print(f"hpsearch.storage_proxy: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    from optuna.storages import get_storage, run_grpc_proxy_server

    storage = get_storage(storage)  # optuna's in-process cache in front of the database, as its docs advise

    print(f"hpsearch.storage_proxy: serving {redact_text(args.storage)} on grpc://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        run_grpc_proxy_server(storage, host=args.host, port=args.port)


def _check_port_free(host: str, port: int) -> None:
    """gRPC listens with ``SO_REUSEPORT``, so a second proxy on a port in use would start, and the kernel would
    split the workers between the two; a plain bind (which any listener refuses) tells first."""
    from hpsearch.errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no user
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"--port {port}: {host}:{port} is in use ({error.strerror}); is a proxy already serving there? "
                "pick another --port"
            ) from None


if __name__ == "__main__":
    main()
