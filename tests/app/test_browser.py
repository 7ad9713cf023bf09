"""End to end in real headless Chromium: type a query, see ranked results, play one.

Uses Debian's ``chromium`` and ``chromium-driver`` through Selenium (``make test`` installs
them where it can). Only 127.0.0.1 traffic: the app runs under uvicorn in a thread on a free
port. Skips, saying why, where the browser or Selenium is missing.
"""

from __future__ import annotations

import os

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SR = 16000
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.slow


def _need_browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver); not installed here")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("headless browser test needs selenium (pip install -r requirements/test.txt)")


def _index_and_serve(tmp: Path, files: dict[str, np.ndarray]):
    """Index ``files`` (relative path -> 16 kHz wave) with a tiny seeded model and serve the index
    under uvicorn on a free loopback port in a thread; yields (url, tmp)."""
    import uvicorn

    from earshot.app.server import create_app
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(model, tmp / "model")
    for rel, wave in files.items():
        (tmp / "s" / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp / "s" / rel, np.asarray(wave, dtype=np.float32), SR)
    index_folder(tmp / "s", open_encoder(tmp / "model"), tmp / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(tmp / "ix"), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline:
            pytest.fail("uvicorn did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tmp
    srv.should_exit = True
    thread.join(10)


def _tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _need_browser()
    yield from _index_and_serve(tmp_path_factory.mktemp("browser"), {f"tone{f}.wav": _tone(f, 2.0) for f in (200, 500, 1200)})


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    # chromium writes caches (dconf, fontconfig) under HOME/XDG folders: keep them in tmp_path
    home = {"HOME": tmp_path / "home", "XDG_CACHE_HOME": tmp_path / "home" / ".cache",
            "XDG_CONFIG_HOME": tmp_path / "home" / ".config", "XDG_RUNTIME_DIR": tmp_path / "run"}
    for folder in home.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in home.items()}}
    try:
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER, env=env), options=opts)
    except Exception as e:  # a browser that cannot start here is an environment problem
        pytest.skip(f"headless chromium could not start: {str(e).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_type_a_query_see_ranked_results_and_play_one(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, tmp = server
    browser.get(url + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("a steady tone", Keys.ENTER)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == 3)
    items = browser.find_elements(By.CSS_SELECTOR, "#results li")
    ranks = [li.find_element(By.CLASS_NAME, "rank").text for li in items]
    assert ranks == ["1", "2", "3"]
    names = {li.find_element(By.CLASS_NAME, "name").text for li in items}
    assert names == {"tone200.wav", "tone500.wav", "tone1200.wav"}
    assert "score" in items[0].find_element(By.CLASS_NAME, "meta").text

    # Keyboard: the first result has focus; arrow down moves; Space plays the focused result.
    active = browser.switch_to.active_element
    assert active.get_attribute("data-id") == items[0].get_attribute("data-id")
    active.send_keys(Keys.ARROW_DOWN)
    second = browser.switch_to.active_element
    assert second.get_attribute("data-id") == items[1].get_attribute("data-id")

    # The audio element loads its file from the server: metadata gives the true duration (2 s).
    audio = items[0].find_element(By.TAG_NAME, "audio")
    wait.until(lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1)
    assert browser.execute_script("return arguments[0].duration", audio) == pytest.approx(2.0, abs=0.05)
    assert browser.execute_script("return arguments[0].error", audio) is None
    second.send_keys(Keys.SPACE)
    audio2 = items[1].find_element(By.TAG_NAME, "audio")
    wait.until(lambda d: d.execute_script("return arguments[0].currentTime > 0 || arguments[0].ended", audio2))


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """A server over files of different lengths in subfolders (issue 14's page test)."""
    _need_browser()
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("page")
    (tmp / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    yield from _index_and_serve(tmp, {
        "field recordings/morning/long walk [dawn] by the river.wav":
            np.concatenate([0.02 * rng.standard_normal(3 * SR), _tone(700, 2.0, 0.8), 0.05 * rng.standard_normal(3 * SR)]),
        "tone300.wav": _tone(300, 3.0),
        "birds/chirp.wav": np.concatenate([_tone(2000, 1.0), np.zeros(SR), _tone(2500, 2.0, 0.1)]),
    })


def _box(driver, el) -> dict:
    return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return {x: r.left, y: r.top, w: r.width, h: r.height};", el)


def _shot(driver, tmp_path, name: str) -> None:
    import os

    folder = Path(os.environ.get("EARSHOT_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / f"{name}.png"))


def _search(driver, url: str, n: int):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "q").send_keys("a steady tone", Keys.ENTER)
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == n)
    # every player has loaded its metadata (and moved to its best window)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results audio')].every(a => a.readyState >= 1)"))
    return driver.find_elements(By.CSS_SELECTOR, "#results li")


def test_waveform_strips_show_the_best_window_play_from_it_and_seek_on_click(page_server, browser, tmp_path):
    import json
    import urllib.request

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, _ = page_server
    api = json.load(urllib.request.urlopen(url + "/search?q=a+steady+tone&k=10"))["results"]
    by_id = {str(r["id"]): r for r in api}
    assert all(len(r["peaks"]) == 200 and max(r["peaks"]) == 255 for r in api)  # stored at index time
    browser.set_window_size(1280, 1000)
    items = _search(browser, url, 3)
    for li in items:
        r = by_id[li.get_attribute("data-id")]
        strip, win = li.find_element(By.CLASS_NAME, "strip"), li.find_element(By.CSS_SELECTOR, ".strip .window")
        s, w = _box(browser, strip), _box(browser, win)
        assert s["w"] > 600 and s["h"] >= 40
        assert w["x"] - s["x"] == pytest.approx(s["w"] * r["window_start"] / r["duration"], abs=2)
        assert w["w"] == pytest.approx(s["w"] * (r["window_end"] - r["window_start"]) / r["duration"], abs=2)
        # the canvas holds a drawn waveform, not a blank box
        assert browser.execute_script(
            "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;",
            li.find_element(By.CSS_SELECTOR, ".strip canvas")) > 100
        audio = li.find_element(By.TAG_NAME, "audio")
        assert browser.execute_script("return arguments[0].currentTime", audio) == pytest.approx(r["window_start"], abs=0.05)
        folder = li.find_element(By.CLASS_NAME, "folder")
        assert folder.is_displayed() and folder.text == (r["folder"] + "/" if r["folder"] else "(top folder)")
    long_li = next(li for li in items if by_id[li.get_attribute("data-id")]["name"].startswith("long walk"))
    assert long_li.find_element(By.CLASS_NAME, "folder").text == "field recordings/morning/"
    _shot(browser, tmp_path, "desktop")

    # Clicking a quarter (or three quarters) of the way along the long file's strip seeks to 2 s
    # (or 6 s) of 8 s, away from its best window, and plays from there.
    strip = long_li.find_element(By.CLASS_NAME, "strip")
    audio = long_li.find_element(By.TAG_NAME, "audio")
    start = by_id[long_li.get_attribute("data-id")]["window_start"]
    frac = 0.25 if start >= 4 else 0.75  # away from the best window, whichever it is
    ActionChains(browser).move_to_element_with_offset(strip, int((frac - 0.5) * _box(browser, strip)["w"]), 0).click().perform()
    t = browser.execute_script("return arguments[0].currentTime", audio)
    assert 8 * frac - 0.1 <= t <= 8 * frac + 0.6 and abs(t - start) > 0.5, (t, start)
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return !arguments[0].paused", audio))
    head, s = _box(browser, long_li.find_element(By.CLASS_NAME, "playhead")), _box(browser, strip)
    assert (head["x"] + head["w"] / 2 - s["x"]) / s["w"] == pytest.approx(t / 8.0, abs=0.03)


def test_the_page_is_usable_at_phone_width_and_a_failed_upload_clears_results(page_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, tmp = page_server
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    items = _search(browser, url, 3)
    assert browser.execute_script("return document.documentElement.clientWidth") == 390
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390  # no sideways scroll
    for li in items:
        name = li.find_element(By.CLASS_NAME, "name")
        line = float(browser.execute_script("return parseFloat(getComputedStyle(arguments[0]).lineHeight)", name))
        box = _box(browser, name)
        assert box["w"] >= 150 or box["h"] <= 1.5 * line  # never a column of single characters
        assert box["h"] <= 3.5 * line, (name.text, box, line)
        audio, strip = _box(browser, li.find_element(By.TAG_NAME, "audio")), _box(browser, li.find_element(By.CLASS_NAME, "strip"))
        assert audio["w"] >= 300 and audio["h"] >= 30  # the player keeps its controls
        assert strip["w"] >= 300 and strip["h"] >= 40
    _shot(browser, tmp_path, "phone")

    browser.find_element(By.ID, "clip").send_keys(str(tmp / "broken.wav"))
    browser.find_element(By.CSS_SELECTOR, "#audio-form button").click()
    WebDriverWait(browser, 20).until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_elements(By.CSS_SELECTOR, "#results li") == []
    assert "broken.wav" in browser.find_element(By.ID, "status").text
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_page_has_a_favicon(page_server):
    import urllib.request

    url, _ = page_server
    with urllib.request.urlopen(url + "/favicon.ico") as r:
        assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.read()
    with urllib.request.urlopen(url + "/") as r:
        assert b'rel="icon" href="/static/favicon.svg"' in r.read()
