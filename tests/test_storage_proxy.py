"""``python -m hpsearch.storage_proxy``: what it refuses before it serves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from support import cli_env, free_port, requires, run_command

pytestmark = requires("grpc")


def test_a_second_proxy_on_a_port_in_use_is_refused(tmp_path: Path) -> None:
    """gRPC listens with SO_REUSEPORT: without the check both proxies would serve, each taking some workers."""
    import psutil

    port = free_port()
    proxy = [sys.executable, "-m", "hpsearch.storage_proxy", f"sqlite:///{tmp_path / 'study.db'}", "--port", str(port)]
    first = subprocess.Popen(proxy, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and "serving" in first.stdout.readline()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.Process(first.pid).net_connections()
        ):
            time.sleep(0.1)
        second = run_command(proxy, tmp_path, timeout=60)
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"hpsearch.storage_proxy: error: --port {port}: 127.0.0.1:{port} is in use (Address already in use); "
        "is a proxy already serving there? pick another --port"
    ]
