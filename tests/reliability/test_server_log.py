"""Issue 21 §5: decoder chatter from uploads (mpg123's ``Note: Illegal Audio-MPEG-Header``)
went raw to the server's stderr; it now arrives as ``earshot.decoder`` log records (INFO, so
hidden at the default ``--log-level warning``)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time

from rel_util import CLI, build, rel_model, write_sounds  # noqa: F401 - rel_model is a fixture


def test_decoder_notes_on_an_upload_are_log_records(tmp_path, rel_model):
    write_sounds(tmp_path / "s", n=2)
    build(tmp_path / "s", tmp_path / "ix", rel_model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*CLI, "serve", str(tmp_path / "ix"), "--port", str(port), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        body = (b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"text.mp3\"\r\n\r\n"
                + b"not an mp3 at all\n" * 100 + b"\r\n--xx--\r\n")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/search/audio", body=body, headers={"Content-Type": "multipart/form-data; boundary=xx"})
        r = c.getresponse()
        assert r.status == 422 and b"text.mp3" in r.read()
        time.sleep(0.5)  # the log thread forwards the pipe's lines
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    chatter = [ln for ln in err.splitlines() if "Illegal Audio-MPEG-Header" in ln]
    assert chatter, err[-2000:]
    assert all("earshot.decoder INFO: " in ln for ln in chatter), chatter[:3]  # before: bare "Note: ..." lines
