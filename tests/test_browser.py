"""End to end in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

Saves a screenshot of each page to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import save_like_a_phone

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "docs" / "screenshots"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage"]

if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("chromium is missing: `make test` installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (make test installs it)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_dir, trained_tiny):
    base = tmp_path_factory.mktemp("browser")
    data, runs = base / "data", base / "runs"
    shutil.copytree(sample_dir, data / "sample")
    for name in ("run-a", "run-b"):
        shutil.copytree(trained_tiny.dir, runs / name)
    port = _free_port()
    env = {**os.environ, "UNET_DATA_DIR": str(data), "UNET_RUNS_DIR": str(runs), "PYTHONPATH": str(ROOT),
           "UNET_SURVEYS_DIR": str(base / "surveys")}
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "serve.py"),  # as `make run`
                             "--server.port", str(port), "--server.headless", "true",
                             "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError((base / "server.log").read_text())
    yield {"url": url, "runs": runs, "data": data}
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1900})
    pg = ctx.new_page()
    pg.set_default_timeout(90_000)
    yield pg
    ctx.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _wait_idle(page) -> None:
    """Until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=120_000)


def test_a_page_url_opened_first_on_a_fresh_server_gets_the_app(server, page):
    # First in this module: the server has served nobody yet. A bookmark to /detect must
    # give the app (navigation, model picker), not Streamlit's legacy run of the file alone.
    page.goto(f"{server['url']}/detect")
    page.get_by_text("Model used by Detect").wait_for()
    page.locator("input[type='file']").wait_for(state="attached")
    nav = page.locator("[data-testid='stSidebarNav']").inner_text()
    assert "Compare" in nav and "common" not in nav


def test_every_response_carries_the_security_headers(server):
    for path in ("/", "/detect", "/_stcore/health", "/static/does-not-exist.js"):
        try:
            response = urllib.request.urlopen(f"{server['url']}{path}", timeout=10)
        except urllib.error.HTTPError as exc:  # a 404 must carry them too
            response = exc
        headers = response.headers
        assert headers["X-Frame-Options"] == "SAMEORIGIN", path
        assert headers["Content-Security-Policy"] == "frame-ancestors 'self'", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "same-origin", path


def test_every_page_works_with_the_network_cut_off(server, browser):
    """Everything a page needs comes from the app itself: nothing is fetched elsewhere."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    outside, failed = [], []

    def only_local(route):
        if route.request.url.startswith(server["url"]):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_local)
    pg = ctx.new_page()
    pg.set_default_timeout(90_000)
    # A page left while it still loads cancels its own lazy chunks (net::ERR_ABORTED): not a failure.
    pg.on("requestfailed", lambda r: failed.append((r.url, r.failure)) if "ERR_ABORTED" not in str(r.failure)
          else None)
    try:
        for path, text in [("", "Compute devices"), ("dataset", "Gallery"), ("train", "Start training"),
                           ("detect", "Photos"), ("survey", "Run the survey"), ("compare", "Compare")]:
            pg.goto(f"{server['url']}/{path}")
            pg.get_by_text(text).first.wait_for()
            _wait_idle(pg)
            pg.wait_for_timeout(500)
    finally:
        ctx.close()
    assert not outside, f"requests outside the app: {outside}"
    assert not failed, f"failed requests: {failed}"


def test_home_and_dataset(server, page):
    page.goto(server["url"])
    page.get_by_text("Damage segmentation studio").first.wait_for()
    page.get_by_text("Compute devices").wait_for()
    _wait_idle(page)
    _shot(page, "home")
    page.goto(f"{server['url']}/dataset")
    page.get_by_text("Gallery").wait_for()
    page.locator("[data-testid='stImage'] img").nth(3).wait_for()
    _wait_idle(page)
    _shot(page, "dataset")


def test_detect_upload_shows_three_images_and_percentage(server, page, tmp_path):
    from PIL import Image

    from unet.synthetic import damaged_wall

    image, _, _ = damaged_wall(11, 600, 900, surface="concrete")  # larger than one tile: the tiled path
    photo = tmp_path / "wall photo.jpg"
    Image.fromarray(image).save(photo, quality=92)
    page.goto(f"{server['url']}/detect")
    page.locator("input[type='file']").set_input_files(str(photo))
    line = page.get_by_text("% damaged at threshold")
    line.wait_for()
    imgs = page.locator("[data-testid='stImage'] img")
    imgs.nth(3).wait_for()
    assert imgs.count() >= 4  # original, mask, overlay, heat map
    page.get_by_role("button", name="Mask PNG").first.wait_for()
    page.get_by_role("button", name="Results CSV").wait_for()
    shown = float(line.inner_text().split("·")[2].split("%")[0])
    if "Bundled default model" in page.locator("section[data-testid='stSidebar']").inner_text():
        assert shown > 0.5  # the bundled model finds the cracks
    _wait_idle(page)
    _shot(page, "detect")
    # The download is the full-resolution mask at the shown threshold, encoded on the click.
    with page.expect_download() as download:
        page.get_by_role("button", name="Mask PNG").first.click()
    mask = np.asarray(Image.open(download.value.path()))
    assert mask.shape == (600, 900) and set(np.unique(mask)) <= {0, 255}
    assert abs(100 * (mask == 255).mean() - shown) < 0.01
    # Inspect up close: a wheel zoom over the photo zooms the overlay and the probability with it.
    page.get_by_text("Inspect up close").first.click()
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    _wait_idle(page)
    box = plot.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 6, box["y"] + box["height"] / 2)
    for _ in range(5):
        page.mouse.wheel(0, -200)
        page.wait_for_timeout(150)
    page.wait_for_timeout(500)
    ranges = page.evaluate("() => { const l = document.querySelector('.js-plotly-plot')._fullLayout;"
                           " return [l.xaxis.range, l.xaxis2.range, l.xaxis3.range] }")
    assert ranges[0] == ranges[1] == ranges[2], ranges
    assert ranges[0][1] - ranges[0][0] < 0.8 * 900, ranges  # zoomed in


def test_detect_shows_progress_by_tiles_and_cancel_stops_it(server, page, tmp_path):
    from PIL import Image

    from unet.synthetic import measured_cracks

    image, _, _ = measured_cracks(31, 1800, 2400, per_side=4)  # 4.3 MP: many rows of tiles
    photo = tmp_path / "big wall.jpg"
    Image.fromarray(image).save(photo, quality=90)
    page.goto(f"{server['url']}/detect")
    # Long enough on any CPU for the bar (shown after 2 s) to be seen and cancelled: seen as taken
    # (the automatic scale would shrink these wide cracks to a quarter, done in about a second on a
    # CPU with bfloat16) and in careful mode (the photo and its three mirror images).
    page.locator("[data-testid='stSelectbox']", has_text="Photo scale").locator("input").click()
    page.locator("[role='option']", has_text="1 (as taken)").click()
    _wait_idle(page)
    page.get_by_text("Careful mode").click()
    _wait_idle(page)
    page.locator("input[type='file']").set_input_files(str(photo))
    page.get_by_text(re.compile(r"Segmenting big wall\.jpg: \d+% · about .* left")).wait_for()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("not segmented (cancelled)").wait_for(timeout=60_000)
    _wait_idle(page)
    assert page.get_by_text("% damaged at threshold").count() == 0
    page.get_by_role("button", name="Segment them").click()
    page.get_by_text("% damaged at threshold").wait_for(timeout=180_000)


def test_survey_of_uploads_ranks_maps_and_reports(server, page, tmp_path):
    from PIL import Image

    from unet.synthetic import measured_cracks

    files = []
    for i, (widths, gps) in enumerate([((1, 2), (45.0, 30.0, 0.0)), ((8, 10), (45.0, 30.0, 2.0)),
                                       ((3, 4), (45.0, 30.0, 4.0))]):
        exif = Image.Exif()
        exif[0x8825] = {1: "N", 2: gps, 3: "E", 4: (9.0, 10.0, 1.5 * i)}
        # The first as an iPhone saves it (HEIC, capital extension): accepted, read, and on the map.
        path = tmp_path / ("house_1.HEIC" if i == 0 else f"house_{i + 1}.jpg")
        files.append(str(save_like_a_phone(measured_cracks(20 + i, 384, 512, widths=widths)[0], path, exif)))
    # One taken with hardly any light: measured, but named for a check by eye before its grade is trusted.
    exif[0x8825] = {1: "N", 2: (45.0, 30.0, 3.0), 3: "E", 4: (9.0, 10.0, 0.5)}
    dark = (measured_cracks(23, 384, 512, widths=(5, 6))[0] * 0.05).astype("uint8")
    Image.fromarray(dark).save(tmp_path / "cellar.jpg", exif=exif, quality=92)
    files.append(str(tmp_path / "cellar.jpg"))
    page.goto(f"{server['url']}/survey")
    page.locator("input[type='file']").set_input_files(files)
    page.get_by_text("Millimetres per pixel").click()
    box = page.get_by_role("textbox", name="millimetres per pixel")
    box.fill("0.8")
    box.press("Enter")
    _wait_idle(page)
    page.get_by_role("button", name="Run the survey").click()
    page.get_by_text("Photos measured").wait_for(timeout=180_000)
    page.locator(".js-plotly-plot").wait_for()
    _wait_idle(page)
    points = page.evaluate("() => document.querySelector('.js-plotly-plot').calcdata"
                           ".reduce((n, trace) => n + trace.length, 0)")  # as drawn (x may be a typed array)
    assert points == 4
    assert page.get_by_text("1 photo(s) to check by eye").is_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Report (HTML, opens offline)").click()
    report = Path(download.value.path()).read_text()
    assert report.index("house_2.jpg") < report.index("house_3.jpg") < report.index("house_1.HEIC")  # worst first
    assert ">cellar.jpg</a>: a dark photo" in report  # listed at the top, linked to its card
    _shot(page, "survey")


def test_train_curve_gains_points(server, page):
    page.goto(f"{server['url']}/train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Started run").wait_for()

    def points() -> int:
        return page.evaluate(
            "() => { const p = document.querySelector('.js-plotly-plot');"
            " return p && p.data ? p.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0 }")

    deadline = time.monotonic() + 180
    first = 0
    while time.monotonic() < deadline and first == 0:
        first = points()
        page.wait_for_timeout(1000)
    assert first > 0, "no curve appeared"
    while time.monotonic() < deadline and points() <= first:
        page.wait_for_timeout(1000)
    assert points() > first, "the curve did not gain points"
    page.get_by_text("epoch").first.wait_for()
    _shot(page, "train")
    page.get_by_role("button", name="Stop").click()
    # Wait until the server has the request: a tab closed at once can lose the click, and the
    # detached run would train on after the tests.
    page.get_by_text("Stop requested").wait_for()


def test_compare_the_two_models_it_offers_first(server, page):
    """The Compare page's default choice: the two bundled models (the default, the noise-robust one)."""
    page.goto(f"{server['url']}/compare")
    page.get_by_role("button", name="Evaluate 2 model(s)").click()
    page.get_by_text("Pixel metrics on").wait_for(timeout=180_000)
    page.get_by_text("Precision-recall").first.wait_for()
    _wait_idle(page)
    _shot(page, "compare")


def test_eight_sessions_uploading_at_once_each_get_their_own_result(server, browser, tmp_path):
    from PIL import Image

    from unet.synthetic import damaged_wall

    photos = []
    for i in range(8):
        h = 96 + 16 * i  # a different size per session identifies whose result is shown
        image, _, _ = damaged_wall(100 + i, h, 128)
        path = tmp_path / f"wall_{i}.png"
        Image.fromarray(image).save(path)
        photos.append((path, h))
    contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in photos]
    try:
        pages = [c.new_page() for c in contexts]
        for pg in pages:
            pg.set_default_timeout(180_000)
            pg.goto(f"{server['url']}/detect")
        for pg in pages:
            pg.locator("input[type='file']").wait_for(state="attached")
        for pg, (path, _) in zip(pages, photos):  # all uploads in flight together
            pg.locator("input[type='file']").set_input_files(str(path))
        for i, (pg, (path, h)) in enumerate(zip(pages, photos)):
            line = pg.get_by_text("% damaged at threshold")
            line.wait_for()
            text = line.inner_text()
            assert path.name in text and f"128×{h} px" in text, (i, text)
            others = [p.name for p, _ in photos if p != path]
            body = pg.locator("body").inner_text()
            assert not any(o in body for o in others), (i, "another session's photo is shown")
    finally:
        for c in contexts:
            c.close()
