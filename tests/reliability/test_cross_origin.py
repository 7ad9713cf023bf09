"""Issue 21 §4: what a page from another origin may do with the server (headless Chromium).

The search server runs on one loopback port and a "foreign" page on another. That page tries
the three things the issue found possible: embed ``<audio src=.../audio/N>`` (which leaked
durations), frame the search page, and fire a no-cors GET to ``/search`` (which ran the model).
All three must fail: the audio never gets metadata, the framed page never runs its script, the
fetch rejects and the server answers 403 without running the model. The page itself, opened
directly, still searches and plays. Skips where chromium or selenium is missing.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
import time

import pytest

from rel_util import build, rel_model, write_sounds  # noqa: F401 - rel_model is a fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """ASGI wrapper noting (path, status) of every answer, to see what reached the server."""

    def __init__(self, app):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def note(message):
            if message["type"] == "http.response.start":
                self.seen.append((scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, note)


@pytest.fixture
def servers(tmp_path, rel_model):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver")
    pytest.importorskip("selenium")
    import uvicorn

    from earshot.app.server import create_app

    write_sounds(tmp_path / "s", n=3)
    build(tmp_path / "s", tmp_path / "ix", rel_model)
    app = create_app(tmp_path / "ix", poll_s=3600)  # no poll: a test sets the index state itself
    rec = Recorder(app)
    port = _port()
    srv = uvicorn.Server(uvicorn.Config(rec, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    target = f"http://127.0.0.1:{port}"
    page = (tmp_path / "evil")
    page.mkdir()
    (page / "index.html").write_text(f"""<!doctype html><html><body>
<audio id="a" preload="metadata" src="{target}/audio/1"></audio>
<iframe id="f" src="{target}/"></iframe>
<script>
window.out = {{audio: "pending", fetch: "pending"}};
const a = document.getElementById("a");
a.addEventListener("loadedmetadata", () => {{ window.out.audio = "duration " + a.duration; }});
a.addEventListener("error", () => {{ window.out.audio = "error"; }});
fetch("{target}/search?q=a+dog&k=3", {{mode: "no-cors"}})
  .then(r => {{ window.out.fetch = "opaque " + r.type; }}, e => {{ window.out.fetch = "rejected"; }});
</script></body></html>""")
    other = _port()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(page), **k)  # noqa: E731
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", other), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    yield target, f"http://127.0.0.1:{other}", rec, app, srv
    evil.shutdown()
    srv.should_exit = True


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    home = {"HOME": tmp_path / "home", "XDG_CACHE_HOME": tmp_path / "home" / ".cache",
            "XDG_CONFIG_HOME": tmp_path / "home" / ".config", "XDG_RUNTIME_DIR": tmp_path / "run"}
    for folder in home.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in home.items()}}
    try:
        driver = webdriver.Chrome(service=Service(executable_path=DRIVER, env=env), options=opts)
    except Exception as e:  # noqa: BLE001 - a browser that cannot start is an environment problem
        pytest.skip(f"headless chromium could not start: {str(e).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_another_origin_cannot_embed_frame_or_search_but_the_page_works(servers, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    target, evil, rec, app, _ = servers
    calls = app.state.batcher.calls
    browser.get(evil + "/index.html")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: "pending" not in d.execute_script("return Object.values(window.out).join()"))
    time.sleep(1.0)  # let the frame finish whatever it would load
    out = browser.execute_script("return window.out")
    assert out == {"audio": "error", "fetch": "rejected"}, out
    assert ("/search", 403) in rec.seen and app.state.batcher.calls == calls  # the model never ran
    assert ("/", 200) in rec.seen  # the frame's document was fetched ...
    assert not any(p == "/static/app.js" for p, _ in rec.seen)  # ... but never ran (frame-ancestors 'none')

    browser.get(target + "/")
    browser.find_element(By.ID, "q").send_keys("a low tone", Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == 3)
    audio = browser.find_elements(By.CSS_SELECTOR, "#results li audio")[0]
    wait.until(lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1)
    assert browser.execute_script("return arguments[0].duration", audio) > 0.5
    assert app.state.batcher.calls > calls


def test_security_headers_and_docs_only_on_request(tmp_path, rel_model):
    from fastapi.testclient import TestClient

    from earshot.app.server import create_app

    write_sounds(tmp_path / "s", n=2)
    build(tmp_path / "s", tmp_path / "ix", rel_model)
    c = TestClient(create_app(tmp_path / "ix", allowed_hosts=("testserver",)))
    for path in ("/", "/health", "/audio/1", "/nowhere"):
        h = c.get(path).headers
        assert h["cross-origin-resource-policy"] == "same-origin", path
        assert "default-src 'self'" in h["content-security-policy"] and "frame-ancestors 'none'" in h[
            "content-security-policy"]
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer"
    for site in ("cross-site", "same-site"):
        r = c.get("/search", params={"q": "a dog"}, headers={"Sec-Fetch-Site": site})
        assert r.status_code == 403 and "own page" in r.json()["detail"]
        assert c.get("/audio/1", headers={"Sec-Fetch-Site": site}).status_code == 403
    assert c.get("/search", params={"q": "a dog"}, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert c.get("/health", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # runs no model
    assert [c.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]
    d = TestClient(create_app(tmp_path / "ix", allowed_hosts=("testserver",), docs=True))
    assert [d.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [200, 200, 200]


def test_the_page_shows_a_failed_search_and_the_index_state(servers, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    target, _, _, app, srv = servers
    app.state.live.partial = "partial: 2 of 3 files (indexing in progress)"
    browser.get(target + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: "partial: 2 of 3 files" in d.find_element(By.ID, "index-state").text)
    box = browser.find_element(By.ID, "q")
    box.send_keys("a low tone", Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == 3)
    srv.should_exit = True  # the server goes away
    time.sleep(1.5)
    box.clear()
    box.send_keys("another query", Keys.ENTER)
    # before: stuck on "searching…" with the old results (Uncaught TypeError: Failed to fetch)
    wait.until(lambda d: "search failed" in d.find_element(By.ID, "status").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#results li") == []
