"""Local STAND-INS for the HTTP APIs of services that cannot run here (SigOpt, W&B), for tests only."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from typing_extensions import Self


class StandInServer:
    """Serves ``handler()`` on 127.0.0.1 (a free port) in a daemon thread, as a context manager."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.silent_connections = 0  # connections that sent no request: a bare reachability probe
        standin = self

        class Server(ThreadingHTTPServer):
            def finish_request(self, request: object, client_address: object) -> None:
                handler = self.RequestHandlerClass(request, client_address, self)
                if getattr(handler, "command", None) is None:
                    with standin.lock:
                        standin.silent_connections += 1

        self.server = Server(("127.0.0.1", 0), self.handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
