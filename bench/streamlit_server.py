"""What the browser benchmarks share: Debian's Chromium with the flags that keep it offline, the
page's markers, and one Streamlit server of the app on 127.0.0.1 (started, waited for, stopped)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's (never `playwright install`)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
MAP = "[data-testid=stDeckGlJsonChart] canvas"
DONE = "[data-testid=stStatusWidget]"  # Streamlit's "Running..." indicator, gone when a run ends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, *, timeout_s: float = 120, poll_s: float = 0.3) -> tuple[subprocess.Popen, str]:
    """The app served on a free loopback port with ``env``; returns (process, URL) once its health
    check answers ``ok`` (polled every ``poll_s``), or exits naming what went wrong."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit(f"streamlit did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(poll_s)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
