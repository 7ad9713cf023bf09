"""The library API: moments in results, modes, filters as query parameters, "more like this"."""

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
def client(tmp_path_factory) -> TestClient:
    from earshot.app.server import create_app
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    tmp = tmp_path_factory.mktemp("library")
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(model, tmp / "model")
    (tmp / "s" / "Foley" / "Doors").mkdir(parents=True)
    for i, f in enumerate((220, 330, 440, 660)):
        sf.write(tmp / "s" / f"tone_{f}.wav", _tone(f, 1.0 + i), SR)
    stereo = np.stack([_tone(300, 3.0), _tone(500, 3.0)], axis=1)
    sf.write(tmp / "s" / "Foley" / "Doors" / "door_slam_heavy.wav", stereo, SR)
    sf.write(tmp / "s" / "Foley" / "Doors" / "door_creak.wav", np.concatenate([_tone(200, 2), _tone(900, 2)]), SR)
    index_folder(tmp / "s", open_encoder(tmp / "model"), tmp / "ix", IndexConfig(window_s=1.0, hop_s=0.5, workers=0))
    return TestClient(create_app(tmp / "ix", allowed_hosts=("testserver",)))


def test_results_carry_moments_and_the_mode(client):
    body = client.get("/search", params={"q": "a low hum", "k": 6}).json()
    assert body["mode"] == "hybrid" and body["ranking"] == "windows" and len(body["results"]) == 6
    for r in body["results"]:
        m = r["moments"]
        assert m and m[0]["peak_start"] == r["window_start"] and m[0]["score"] == pytest.approx(r["window_score"])
        assert all(0 <= x["start"] < x["end"] <= r["duration"] + 1e-6 for x in m)
    pooled = client.get("/search", params={"q": "a low hum", "k": 6, "ranking": "pooled", "mode": "meaning"}).json()
    assert pooled["ranking"] == "pooled" and len(pooled["results"]) == 6


def test_words_mode_filters_and_their_errors(client):
    r = client.get("/search", params={"q": "door slam", "mode": "words"}).json()["results"]
    assert r[0]["path"] == "Foley/Doors/door_slam_heavy.wav" and r[0]["words_score"] > 0 and r[0]["moments"] == []
    doors = client.get("/search", params={"q": "a low hum", "folder": "Foley/Doors", "k": 5}).json()["results"]
    assert {x["name"] for x in doors} == {"door_slam_heavy.wav", "door_creak.wav"}
    stereo = client.get("/search", params={"q": "a low hum", "where": "channels=2"}).json()["results"]
    assert [x["name"] for x in stereo] == ["door_slam_heavy.wav"]
    bad = client.get("/search", params={"q": "hum", "where": "loudness>3"})
    assert bad.status_code == 400 and "unknown field 'loudness'" in bad.json()["detail"]
    assert client.get("/search", params={"q": "hum", "mode": "fuzzy"}).status_code == 422
    assert client.get("/search", params={"q": "-door"}).status_code == 422


def test_more_like_this_queries_by_a_stored_window_and_leaves_the_file_out(client):
    first = client.get("/search", params={"q": "door creak", "mode": "words"}).json()["results"][0]
    like = client.get("/search/like", params={"id": first["id"], "start": 2.5, "k": 3}).json()
    assert len(like["results"]) == 3 and first["id"] not in {x["id"] for x in like["results"]}
    assert like["query"] == "like Foley/Doors/door_creak.wav @ 2.5 s"
    assert client.get("/search/like", params={"id": 10**9}).status_code == 404


def test_search_by_example_takes_the_same_filters(client, tmp_path):
    sf.write(tmp_path / "q.wav", _tone(440, 1.0), SR)
    with open(tmp_path / "q.wav", "rb") as f:
        r = client.post("/search/audio", params={"folder": "Foley/Doors", "k": 5}, files={"file": ("q.wav", f)})
    assert r.status_code == 200 and {x["name"] for x in r.json()["results"]} == {"door_slam_heavy.wav", "door_creak.wav"}
    with open(tmp_path / "q.wav", "rb") as f:
        bad = client.post("/search/audio", params={"where": "size>3"}, files={"file": ("q.wav", f)})
    assert bad.status_code == 400 and "unknown field 'size'" in bad.json()["detail"]
