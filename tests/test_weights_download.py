"""Weights when online: a small file served on 127.0.0.1 is fetched, verified, cached and then
found without the network; a bad hash is refused; no server, or MINORITY_OFFLINE=1, gives the
usual one-sentence error. Nothing leaves this machine."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest

from minority import weights
from minority.errors import MissingWeightsError
from minority.weights import WeightSource, find_weights

CONTENT = b"tiny weights " * 100
SHA256 = hashlib.sha256(CONTENT).hexdigest()
# torchvision's convention: the name carries a prefix of the file's sha256
NAME = f"tiny-{SHA256[:8]}.pth"


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving ``NAME`` (and ``renamed.pth``, same bytes)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / NAME).write_bytes(CONTENT)
    (served / "renamed.pth").write_bytes(CONTENT)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def online(tmp_path: Path, monkeypatch):
    """An empty torch hub cache, no weight folders, downloads allowed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MINORITY_WEIGHTS", raising=False)
    monkeypatch.delenv("MINORITY_OFFLINE", raising=False)
    weights.allow_downloads(True)
    yield tmp_path / "torch" / "hub" / "checkpoints"
    weights.allow_downloads(True)


def test_served_file_is_verified_cached_and_found_again(server, online, monkeypatch):
    monkeypatch.setitem(weights.OFFICIAL, NAME, WeightSource(server + NAME))
    path = find_weights(NAME, purpose="test")
    assert path == online / NAME and path.read_bytes() == CONTENT
    weights.allow_downloads(False)  # found in the cache now, with downloads off
    assert find_weights(NAME) == path
    assert not list(online.glob("*.partial"))


def test_full_sha256_is_checked_too(server, online, monkeypatch):
    monkeypatch.setitem(weights.OFFICIAL, "plain.pth", WeightSource(server + "renamed.pth", SHA256))
    assert find_weights("plain.pth").read_bytes() == CONTENT


def test_bad_hash_is_refused_with_one_sentence(server, online, monkeypatch):
    wrong = "0" * 64
    monkeypatch.setitem(weights.OFFICIAL, NAME, WeightSource(server + NAME, wrong))
    with pytest.raises(MissingWeightsError) as error:
        find_weights(NAME)
    message = str(error.value)
    assert message.count(". ") == 0 and message.endswith("it was not kept.")
    assert SHA256 in message and wrong in message
    assert not online.exists() or not any(online.iterdir())


@pytest.mark.parametrize("offline", [False, True])
def test_no_network_or_offline_gives_the_usual_error(server, online, monkeypatch, offline):
    # a closed port on 127.0.0.1 stands for an unreachable server
    monkeypatch.setitem(weights.OFFICIAL, NAME, WeightSource("http://127.0.0.1:9/" + NAME))
    if offline:
        monkeypatch.setitem(weights.OFFICIAL, NAME, WeightSource(server + NAME))
        monkeypatch.setenv("MINORITY_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="was not found and cannot be downloaded here"):
        find_weights(NAME)
    assert not (online / NAME).exists()
