"""The learning lab behind the web page (#15): a local server that changes state and must be
safe, training from the page, explanations by the network's own backward pass, one visible SGD
step, the robustness explorer, and the data and evaluation tabs."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from scratchcnn.app import Classifier
from scratchcnn.app.explain import explain, inference_copy, one_step, transform
from scratchcnn.app.lab import MAX_IMAGES
from scratchcnn.app.server import make_server
from scratchcnn.data import load, to_batch

from gradcheck import numerical_gradient, relative_error
from helpers import serving

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def clf(mnist_dir) -> Classifier:
    images, labels = load("mnist", "train", mnist_dir)
    model = Classifier.create("fast", seed=0)
    model.fit(images[:3000], labels[:3000], epochs=1, batch_size=64, lr=0.05, momentum=0.9)
    return model


@pytest.fixture(scope="module")
def server(clf, mnist_dir):
    with serving(make_server(clf, "127.0.0.1", 0, data_dir=str(mnist_dir), timeout=2)) as port:
        yield port


def ask(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    kind = response.getheader("Content-Type") or ""
    return response.status, json.loads(data) if "json" in kind else data


def raw(port: int, payload: bytes, wait: float = 3.0) -> bytes:
    """Send raw bytes on one connection; return everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


# -- a local server that changes state must be safe ------------------------------------------------


def test_a_foreign_host_is_refused(server):
    # DNS rebinding: a page at attacker.example that resolves to 127.0.0.1.
    answer = raw(server, b"GET /api/model HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 421") and b'"error"' in answer
    good = raw(server, f"GET /api/model HTTP/1.1\r\nHost: localhost:{server}\r\n\r\n".encode(), 1)
    assert good.startswith(b"HTTP/1.1 200")


def test_cross_site_posts_are_refused(server):
    status, body = ask(server, "POST", "/api/transform", {"pixels": [[0] * 28] * 28},
                       {"Origin": "http://evil.example"})  # fmt: skip
    assert status == 403 and "cross-site" in body["error"]
    same_site = {"Content-Type": "text/plain", "Origin": f"http://127.0.0.1:{server}"}
    status, body = ask(server, "POST", "/api/train/start", b"recipe=tiny", same_site)
    assert status == 415  # state changes take application/json only
    blank = {"pixels": [[0] * 28] * 28}
    status, _ = ask(
        server, "POST", "/api/transform", blank, {"Origin": f"http://127.0.0.1:{server}"}
    )
    assert status == 200


def big_rgba_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()  # 6300x6300 RGBA: 170 KB of PNG, 159 MB once decoded
    Image.new("RGBA", (6300, 6300), (255, 255, 255, 255)).save(out, format="PNG")
    return out.getvalue()


def test_decoded_size_is_bounded_before_decoding(server):
    png = big_rgba_png()
    assert len(png) < 300_000

    def send(_):
        start = time.perf_counter()
        status, body = ask(server, "POST", "/api/predict", png, {"Content-Type": "image/png"})
        return status, body, time.perf_counter() - start

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(send, range(6)))
    for status, body, seconds in results:
        assert status == 400 and "too large" in body["error"] and seconds < 5


def test_a_slow_client_is_cut_off(server):
    start = time.perf_counter()
    answer = raw(server, b"GET /api/model HTTP/1.1\r\n", wait=10)  # never finishes the request
    assert time.perf_counter() - start < 8  # the server's timeout (2 s here) closed it
    assert b"200" not in answer


def test_a_burst_of_200_connections_is_not_reset(server):
    sockets = [socket.create_connection(("127.0.0.1", server), timeout=30) for _ in range(200)]
    request = f"GET /style.css HTTP/1.1\r\nHost: 127.0.0.1:{server}\r\nConnection: close\r\n\r\n"
    for sock in sockets:
        sock.sendall(request.encode())
    answers = []
    for sock in sockets:
        answers.append(sock.recv(64))
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)


def host(port: int) -> bytes:
    return f"Host: 127.0.0.1:{port}\r\n".encode()


def test_an_unread_body_is_never_parsed_as_the_next_request(server):
    # A body sent to a wrong endpoint is read and dropped; a body whose end is unknown closes
    # the connection; either way "GET /smuggled" inside a body is never answered.
    smuggle = b"GET /smuggled HTTP/1.1\r\n" + host(server) + b"\r\n"
    cases = [
        b"POST /nope HTTP/1.1\r\n" + host(server) + b"Content-Length: %d\r\n\r\n" % len(smuggle),
        b"POST /api/predict HTTP/1.1\r\n" + host(server) + b"Content-Length: -5\r\n\r\n",
        b"POST /api/predict HTTP/1.1\r\n" + host(server)
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]  # fmt: skip
    for head in cases:
        answer = raw(server, head + smuggle)
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert b"smuggled" not in answer and b'"error"' in answer


@pytest.mark.parametrize(
    "payload,status",
    [
        (b"PUT /api/model HTTP/1.1\r\n%s\r\n", b"501"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n%s\r\n", b"414"),
        (
            b"GET / HTTP/1.1\r\n%s" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n",
            b"431",
        ),
    ],
    ids=["501", "414", "431"],
)
def test_every_error_has_a_json_body(server, payload, status):
    answer = raw(server, payload.replace(b"%s", host(server)))
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"application/json" in answer and b'{"error": ' in answer


def test_request_paths_are_escaped_in_the_log(server, caplog):
    with caplog.at_level(logging.INFO, logger="scratchcnn.app.server"):
        raw(server, b"GET /\x1b[31mred HTTP/1.1\r\n" + host(server) + b"\r\n")
        time.sleep(0.2)
    assert caplog.records and not any("\x1b" in r.getMessage() for r in caplog.records)
    assert any("\\x1b" in r.getMessage() for r in caplog.records)


# -- explanations by the network's own backward pass -------------------------------------------


def test_saliency_is_the_gradient_of_the_class_score(clf, mnist_dir):
    # The float64 central difference of the class's logit, pixel by pixel, with the batch
    # norms in their inference form (what predicts). A little noise breaks the exact ties of
    # MNIST's flat background, where max-pooling is not differentiable (there the central
    # difference averages the two one-sided slopes).
    images, _ = load("mnist", "test", mnist_dir)
    noise = np.random.default_rng(0).uniform(0, 0.3, (1, 28, 28, 1))
    x = to_batch(images[:1], clf.mean, clf.std).astype(np.float64) + noise
    layers = [layer.astype(np.float64) for layer in inference_copy(clf.model)]

    def score() -> float:
        out = x
        for layer in layers:
            out = layer.forward(out, training=False)
        return float(out[0, 3])

    numeric = numerical_gradient(score, x)[0]
    analytic = explain(clf.model, x, target=3)["saliency"]
    assert relative_error(analytic, numeric) < 1e-6


def test_explain_endpoint(server, clf, mnist_dir):
    images, _ = load("mnist", "test", mnist_dir)
    status, body = ask(server, "POST", "/api/explain", {"pixels": images[0].tolist(), "class": 7})
    assert status == 200 and body["class"] == 7
    x = clf.prepare(images[:1])
    local = explain(clf.model, x, 7)
    assert np.allclose(body["saliency"]["values"], local["saliency"][..., 0], atol=1e-5)
    assert [c["layer"] for c in body["grad_cam"]] == ["Conv2D(1, 32, 3)", "Conv2D(32, 64, 3)"]
    assert [m["layer"] for m in body["pool_masks"]] == ["MaxPool2D(2)", "MaxPool2D(2)"]
    shape = body["pool_masks"][0]["mask"]["shape"]
    assert shape == [32, 26, 26]
    np.testing.assert_allclose(body["probabilities"], clf.predict_proba(images[:1])[0], atol=1e-5)


def test_one_sgd_step_made_visible(server, clf, mnist_dir):
    images, labels = load("mnist", "test", mnist_dir)
    label = (int(labels[0]) + 1) % 10  # a label it does not believe yet
    before = clf.predict_proba(images[:1])[0]
    status, body = ask(server, "POST", "/api/step",
                       {"pixels": images[0].tolist(), "label": label, "lr": 0.5})  # fmt: skip
    assert status == 200
    assert body["after"][label] > body["before"][label] and body["loss_after"] < body["loss"]
    np.testing.assert_allclose(body["before"], before, atol=1e-4)  # frozen batch norms
    np.testing.assert_allclose(clf.predict_proba(images[:1])[0], before)  # served model unchanged
    names = [layer["layer"] for layer in body["layers"]]
    assert names == ["Conv2D(1, 32, 3)", "Conv2D(32, 64, 3)", "Dense(1600, 10)"]
    assert body["layers"][0]["grad_maps"]["shape"] == [32, 3, 3]
    local = one_step(clf.model, clf.prepare(images[:1]), label, 0.5)
    assert abs(local["layers"][2]["grad_norm"] - body["layers"][2]["grad_norm"]) < 1e-4


def test_robustness_explorer(server, mnist_dir):
    images, _ = load("mnist", "test", mnist_dir)
    digit = images[0]
    np.testing.assert_array_equal(transform(digit), digit)  # no change: the same image
    turned = transform(digit, rotate=90)
    assert (
        not np.array_equal(turned, digit)
        and abs(int(turned.sum()) - int(digit.sum())) < 0.2 * digit.sum()
    )
    thick = transform(digit, thickness=1)
    assert (thick > 127).sum() > (digit > 127).sum()
    status, body = ask(server, "POST", "/api/transform",
                       {"pixels": digit.tolist(), "rotate": 180, "noise": 0.3})  # fmt: skip
    assert status == 200 and len(body["probabilities"]) == 10 and "unsure" in body
    status, body = ask(server, "POST", "/api/transform", {"pixels": digit.tolist(), "scale": 99})
    assert status == 400 and "scale" in body["error"]


# -- the data and evaluation tabs -----------------------------------------------------------------


def test_data_and_evaluation(server, clf, mnist_dir):
    status, data = ask(server, "GET", "/api/data")
    assert status == 200 and sum(data["counts"]) == 60000 and len(data["averages"]) == 10
    assert abs(data["pixels"]["mean"] - 0.1307) < 1e-3
    status, result = ask(server, "GET", "/api/evaluate")
    assert status == 200 and np.array(result["confusion"]).sum() == 10000
    images, labels = load("mnist", "test", mnist_dir)
    first = result["mistakes"][0]
    assert first["label"] == labels[first["index"]] and first["predicted"] != first["label"]
    confidences = [m["confidence"] for m in result["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)


# -- training from the page ------------------------------------------------------------------------


def events(port: int, since: int = 0, limit: float = 120) -> list[dict]:
    """Read the Server-Sent Events stream until it ends."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
    connection.request("GET", f"/api/train/events?since={since}")
    response = connection.getresponse()
    assert response.getheader("Content-Type") == "text/event-stream"
    found = []
    for line in response:
        if line.startswith(b"data: "):
            found.append(json.loads(line[6:]))
    connection.close()
    return found


def test_training_from_the_page(server, tmp_path):
    # All the images the lab allows: 20,000 trained in about 1.2 s here, two or three progress
    # events (one each 0.5 s), and a fast spell on CI finished them after one
    status, body = ask(
        server, "POST", "/api/train/start", {"recipe": "tiny", "images": MAX_IMAGES, "lr": 0.05}
    )
    assert status == 200 and body["state"] == "running" and len(body["grid"]) == 24
    status, body = ask(server, "POST", "/api/train/start", {"recipe": "tiny"})
    assert status == 409  # one training at a time
    # predictions keep being answered while it trains
    assert ask(server, "POST", "/api/transform", {"pixels": [[0] * 28] * 28})[0] == 200
    stream = events(server)
    kinds = [e["kind"] for e in stream]
    assert kinds[-1] == "done" and "progress" in kinds and "epoch" in kinds
    progress = [e for e in stream if e["kind"] == "progress"]
    assert all(np.isfinite(e["loss"]) for e in progress)
    assert len(progress) >= 2 and progress[-1]["loss"] < progress[0]["loss"]  # it learns
    done = stream[-1]
    assert done["val_accuracy"] > 0.9 and len(done["filters"]) == 8
    status, blob = ask(server, "GET", "/api/train/model")
    assert status == 200 and blob[:2] == b"PK"  # an .npz archive
    path = tmp_path / "lab.npz"
    path.write_bytes(blob)
    assert Classifier.load(path).architecture == "seed"
    status, body = ask(server, "POST", "/api/train/use", {})
    assert status == 200 and body["architecture"] == "seed"
    assert ask(server, "GET", "/api/model")[1]["architecture"] == "seed"


def test_stop_and_resume(server):
    # All the images the lab allows, and a stop well before they are done: 20,000 images
    # could finish inside the wait on a fast machine, and the stop then found nothing to stop.
    status, _ = ask(server, "POST", "/api/train/start", {"recipe": "tiny", "images": MAX_IMAGES})
    assert status == 200
    time.sleep(0.5)
    assert ask(server, "POST", "/api/train/stop", {})[0] == 200
    stream = events(server)
    assert stream[-1]["kind"] == "stopped"
    status, body = ask(server, "POST", "/api/train/resume", {})
    assert status == 200 and body["state"] == "running"
    stream = events(server, since=len(stream))
    assert stream[-1]["kind"] == "done"
    assert ask(server, "POST", "/api/train/resume", {})[0] == 409


def test_bad_training_requests(server):
    for request, needle in [
        ({"recipe": "huge"}, "unknown recipe"),
        ({"images": 10}, "images"),
        ({"lr": 5}, "lr"),
    ]:
        status, body = ask(server, "POST", "/api/train/start", request)
        assert status == 400 and needle in body["error"]
