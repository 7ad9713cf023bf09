"""The page's library features in headless Chromium, at desktop width and at 390 px: moments on
the waveform, Enter opens them, "More like this", filters and modes, exports, drag-out, "also at".

Reuses the browser and server helpers of ``test_browser.py``; skips the same way without them.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_browser import SR, _box, _index_and_serve, _need_browser, _shot, _tone, browser  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def library_server(tmp_path_factory):
    _need_browser()
    rng = np.random.default_rng(0)
    long = np.concatenate([0.02 * rng.standard_normal(7 * SR), _tone(700, 2.0, 0.8), 0.02 * rng.standard_normal(3 * SR)])
    door = np.concatenate([_tone(150, 0.5, 0.9), 0.05 * rng.standard_normal(SR)])
    yield from _index_and_serve(tmp_path_factory.mktemp("library_page"), {
        "field/long recording.wav": long, "Foley/Doors/door_slam.wav": door, "copies/door_slam.wav": door,
        "tone300.wav": _tone(300, 3.0)})


def _run(driver, url: str, q: str, n: int, mode: str = "hybrid", where: str = ""):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url + "/")
    Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
    if where:
        driver.find_element(By.ID, "where").send_keys(where)
    driver.find_element(By.ID, "q").send_keys(q)
    driver.find_element(By.CSS_SELECTOR, "#text-form button").click()
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results > li")) == n)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results audio')].every(a => a.readyState >= 1)"))
    return driver.find_elements(By.CSS_SELECTOR, "#results > li")


@pytest.mark.parametrize("width", [1280, 390])
def test_moments_like_filters_exports_drag_and_copies(library_server, browser, tmp_path, width):
    import json
    import urllib.request

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = library_server
    if width == 390:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    else:
        browser.set_window_size(1280, 1000)
    api = {r["id"]: r for r in json.load(urllib.request.urlopen(url + "/search?q=a+bright+tone&k=10"))["results"]}
    items = _run(browser, url, "a bright tone", 4)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width

    # every moment is a mark on its strip, placed by its span; a click on one plays from it
    for li in items:
        r = api[int(li.get_attribute("data-id"))]
        marks = li.find_elements(By.CSS_SELECTOR, ".strip .moment")
        assert len(marks) == len(r["moments"]) >= 1
        s, m = _box(browser, li.find_element(By.CLASS_NAME, "strip")), _box(browser, marks[0])
        assert m["x"] - s["x"] == pytest.approx(s["w"] * r["moments"][0]["start"] / r["duration"], abs=2)
    long_li = next(li for li in items if "long recording" in li.find_element(By.CLASS_NAME, "name").text)
    long_r = api[int(long_li.get_attribute("data-id"))]
    audio = long_li.find_element(By.TAG_NAME, "audio")
    mark = long_li.find_elements(By.CSS_SELECTOR, ".strip .moment")[-1]
    browser.execute_script("arguments[0].click()", mark)  # marks are thin: click it, not a pixel near it
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return !arguments[0].paused", audio))
    t = browser.execute_script("return arguments[0].currentTime", audio)
    assert float(mark.get_attribute("data-start")) - 0.05 <= t <= float(mark.get_attribute("data-start")) + 0.8
    browser.execute_script("arguments[0].pause()", audio)

    # Enter on a focused result opens its moments and focuses the first
    browser.execute_script("arguments[0].focus()", long_li)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    panel = long_li.find_element(By.CLASS_NAME, "moments")
    assert panel.is_displayed() and len(panel.find_elements(By.TAG_NAME, "button")) == len(long_r["moments"])
    assert browser.switch_to.active_element == panel.find_elements(By.TAG_NAME, "button")[0]

    # "also at": the byte-identical door slam names its copy
    door = next(li for li in items if li.find_element(By.CLASS_NAME, "name").text == "door_slam.wav"
                and li.find_element(By.CLASS_NAME, "folder").text == "Foley/Doors/")
    assert door.find_element(By.CLASS_NAME, "also").text == "also at copies/door_slam.wav"

    # drag-out hands the file's URL to the desktop as a download
    got = browser.execute_script(
        "const dt = new DataTransfer(); arguments[0].dispatchEvent(new DragEvent('dragstart', {dataTransfer: dt, bubbles: true}));"
        "return [dt.getData('DownloadURL'), dt.getData('text/uri-list')];", door)
    assert got[0] == f"audio/wav:door_slam.wav:{url}/audio/{door.get_attribute('data-id')}" and got[1].endswith(
        f"/audio/{door.get_attribute('data-id')}")

    # exports: blobs of the shown results
    csv_text = browser.execute_async_script(
        "const done = arguments[0]; fetch(document.getElementById('export-csv').href).then(r => r.text()).then(done);")
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("rank,score,path") and len(lines) == 5
    m3u = browser.execute_async_script(
        "const done = arguments[0]; fetch(document.getElementById('export-m3u').href).then(r => r.text()).then(done);")
    assert m3u.startswith("#EXTM3U") and m3u.count(f"{url}/audio/") == 4

    # More like this: the long file's best moment as the query; the file itself is left out
    long_li.find_element(By.CLASS_NAME, "like").click()
    WebDriverWait(browser, 20).until(lambda d: "like field/long recording.wav" in d.find_element(By.ID, "status").text)
    names = [li.find_element(By.CLASS_NAME, "name").text for li in browser.find_elements(By.CSS_SELECTOR, "#results > li")]
    assert len(names) == 3 and "long recording.wav" not in names

    # words mode and a filter
    words = _run(browser, url, "door slam", 2, mode="words")
    assert {li.find_element(By.CLASS_NAME, "name").text for li in words} == {"door_slam.wav"}
    longer = _run(browser, url, "a bright tone", 1, where="duration>5")
    assert longer[0].find_element(By.CLASS_NAME, "name").text == "long recording.wav"
    _shot(browser, tmp_path, f"library-{width}")
    if width == 390:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
