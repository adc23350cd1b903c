"""What the browser benchmarks share: the app served on a free local port, and chromium's flags."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Debian's chromium, headless; without the background-networking flags it keeps trying
# (and failing) to reach Google's hosts from this closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return shutil.which("chromium")


def start_app(work: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run serve.py`` (as ``make run``) on a free port, with data and runs under ``work``;
    returns the process and its URL at once (see :func:`wait_healthy`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "UNET_DATA_DIR": str(work / "data"), "UNET_RUNS_DIR": str(work / "runs"),
           "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "serve.py"),
                               "--server.port", str(port), "--server.address", "127.0.0.1"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, poll: float = 0.05) -> None:
    """Until the server answers its health check."""
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return
        except OSError:
            time.sleep(poll)
