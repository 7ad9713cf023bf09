"""The HTTP API through FastAPI's test client, on an index of generated sounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

SR = 16000


def _tone(freq: float, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    tmp = tmp_path_factory.mktemp("server")
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(model, tmp / "model")
    (tmp / "s" / "sub").mkdir(parents=True)
    for i, f in enumerate((220, 330, 440, 660, 880)):
        sf.write(tmp / "s" / ("sub" if i % 2 else "") / f"tone{f}.wav", _tone(f, 1.0 + i * 0.5), SR)
    (tmp / "secret.txt").write_text("outside the index")
    index_folder(tmp / "s", open_encoder(tmp / "model"), tmp / "ix",
                 IndexConfig(window_s=2.0, hop_s=1.0, workers=0))
    return tmp


@pytest.fixture(scope="module")
def client(built):
    from earshot.app.server import create_app

    return TestClient(create_app(built / "ix", max_query_chars=50, max_k=20, max_upload_bytes=200_000,
                                 allowed_hosts=("testserver",)))


def test_health_reports_the_index(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["items"] == 5 and body["index_type"] == "flat"
    assert body["model_id"].startswith("sha256:") and body["limits"]["max_k"] == 20


def test_search_returns_ranked_results_with_playable_ids(client, built):
    r = client.get("/search", params={"q": "a pure tone", "k": 3})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["rank"] for x in res] == [1, 2, 3]
    assert [x["score"] for x in res] == sorted((x["score"] for x in res), reverse=True)
    first = res[0]
    assert first["audio_url"] == f"/audio/{first['id']}" and first["name"].startswith("tone")
    audio = client.get(first["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert audio.content == (built / "s" / first["path"]).read_bytes()


@pytest.mark.parametrize("params,status,word", [
    ({"q": "x" * 51, "k": 3}, 422, "at most 50"),
    ({"q": "", "k": 3}, 422, "at least 1"),
    ({"q": "   ", "k": 3}, 422, "blank"),
    ({"q": "dog", "k": 0}, 422, "greater than or equal to 1"),
    ({"q": "dog", "k": 21}, 422, "less than or equal to 20"),
    ({"k": 3}, 422, "missing"),
])
def test_search_input_limits_give_4xx_with_a_message(client, params, status, word):
    r = client.get("/search", params=params)
    assert r.status_code == status
    assert word in r.text


def test_audio_only_serves_indexed_files_by_id(client):
    assert client.get("/audio/999").status_code == 404
    assert "no file with id 999" in client.get("/audio/999").json()["detail"]
    assert client.get("/audio/..%2Fsecret.txt").status_code in (404, 422)
    assert client.get("/audio/-1").status_code == 404
    assert client.get("/audio/1.5").status_code == 422


def test_search_by_uploaded_example(client, built):
    data = (built / "s" / "sub" / "tone660.wav").read_bytes()
    r = client.post("/search/audio", params={"k": 2}, files={"file": ("mine.wav", data, "audio/wav")})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["path"] == "sub/tone660.wav" and top["score"] == pytest.approx(1.0, abs=1e-5)
    big = client.post("/search/audio", files={"file": ("big.wav", b"0" * 200_001, "audio/wav")})
    assert big.status_code == 413 and "larger than" in big.text
    odd = client.post("/search/audio", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert odd.status_code == 415 and "unsupported" in odd.text
    broken = client.post("/search/audio", files={"file": ("broken.wav", b"RIFF1234WAVEjunk", "audio/wav")})
    assert broken.status_code == 422 and "broken.wav" in broken.text


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/static/app.js" in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/search/audio" in js.text
    assert client.get("/static/style.css").status_code == 200


def test_the_app_refuses_another_model(built, tmp_path):
    from earshot.app.server import create_app
    from earshot.errors import EarshotError
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(5)
    other = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(other, tmp_path / "other")
    with pytest.raises(EarshotError, match="built with model"):
        create_app(built / "ix", model=tmp_path / "other")
