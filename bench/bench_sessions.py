"""Server memory as browser sessions come and go: does Detect's memory leave with its session?

    python bench/bench_sessions.py [--sessions 4] [--side 2000]   # needs Debian's chromium

Starts the app, then opens sessions one after another in separate browser contexts; each
drops its own photo on Detect (the bundled model) and waits for the result. Prints the
server's resident memory (RSS, the server and its children) after each session, after
closing them all and waiting, and after one more visitor opens Home, as ratios to the
memory after the first session.

Streamlit (1.67) keeps a closed session's state for ``server.disconnectedSessionTTL``
seconds (120 by default) so a reconnecting browser finds it, and removes expired sessions
lazily, when its session store is next touched (a new connection): until then their
memory stays, however long the server is idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._app import CHROMIUM_ARGS, chromium, start_app, wait_healthy  # noqa: E402


def rss_mib(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from unet.synthetic import damaged_wall, write_sample_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--side", type=int, default=2000, help="long side of each session's photo (4:3)")
    ap.add_argument("--linger", type=float, default=150,
                    help="seconds to wait after the sessions close (Streamlit keeps them 120 s)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    write_sample_dataset(work / "data" / "sample", count=6, seed=0, size=(128, 128))
    (work / "runs").mkdir()
    h = a.side * 3 // 4
    photos = []
    for i in range(a.sessions):
        image, _, _ = damaged_wall(70 + i, h, a.side)
        photos.append(work / f"photo_{i}.jpg")
        Image.fromarray(image).save(photos[-1], quality=90)
    server, url = start_app(work)
    try:
        wait_healthy(url, poll=0.1)
        print(f"# session memory benchmark: {os.cpu_count()} CPU cores, {a.sessions} sessions, "
              f"photos {a.side}x{h} ({a.side * h / 1e6:.1f} MP), bundled model")
        print(f"server started: {rss_mib(server.pid):.0f} MiB")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            contexts, after = [], []
            for i, photo in enumerate(photos):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(300_000)
                page.goto(f"{url}/detect")
                page.locator("input[type='file']").set_input_files(str(photo))
                page.get_by_text("% damaged at threshold").wait_for()
                contexts.append(ctx)
                after.append(rss_mib(server.pid))
                print(f"after session {i + 1}: {after[-1]:.0f} MiB ({after[-1] / after[0]:.2f}x the first)")
            for ctx in contexts:
                ctx.close()
            browser.close()
        closed = time.monotonic()
        while time.monotonic() - closed < a.linger:
            time.sleep(5)
        gone = rss_mib(server.pid)
        with sync_playwright() as p:  # a new visitor: Streamlit now drops the expired sessions
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_text("Latest runs").wait_for()
            time.sleep(5)
            visited = rss_mib(server.pid)
            browser.close()
        per_session = (after[-1] - after[0]) / max(1, len(after) - 1)
        print(f"{a.linger:.0f} s after all sessions closed: {gone:.0f} MiB ({gone / after[-1]:.2f}x the peak, "
              f"{gone / after[0]:.2f}x the first session); each later session added {per_session:.0f} MiB "
              f"(a photo's pixels and map: {a.side * h * 7 / 2**20:.0f} MiB)")
        print(f"after a new visitor opened Home: {visited:.0f} MiB ({visited / after[-1]:.2f}x the peak, "
              f"{visited / after[0]:.2f}x the first session)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
