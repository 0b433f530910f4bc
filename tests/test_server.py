"""The web server: a real server on a free port on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import base64
import http.client
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from scratchcnn.app import Classifier
from scratchcnn.app.photos import find_digit, load_digit, read_image
from scratchcnn.app.server import MAX_BODY, MAX_PIXELS, make_server
from scratchcnn.data import load

from helpers import serving


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory) -> Classifier:
    images, labels = load("mnist", "train", mnist_dir)
    clf = Classifier.create("seed", seed=0)
    clf.fit(images[:6000], labels[:6000], epochs=2, lr=0.01, momentum=0.9)
    path = tmp_path_factory.mktemp("serve") / "seed.npz"
    clf.save(path)
    return Classifier.load(path)


@pytest.fixture(scope="module")
def server(trained):
    with serving(make_server(trained, "127.0.0.1", 0)) as port:
        yield port


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), data


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).convert(mode).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def digits(mnist_dir):
    images, labels = load("mnist", "test", mnist_dir)
    # Dark ink on white paper, 5x larger: what a scan or the page's canvas looks like.
    return [
        (png_bytes(np.kron(255 - images[i], np.ones((5, 5), np.uint8))), int(labels[i]))
        for i in range(10)
    ]


def test_page_and_static_files(server):
    status, kind, body = request(server, "GET", "/")
    assert status == 200 and kind.startswith("text/html")
    assert b'<canvas id="pad"' in body and b"/app.js" in body
    assert b"http://" not in body and b"https://" not in body  # nothing from outside
    for path, expected in [("/app.js", "text/javascript"), ("/style.css", "text/css")]:
        status, kind, body = request(server, "GET", path)
        assert status == 200 and kind.startswith(expected) and len(body) > 500
        assert b"https://" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/web/index.html",
        "/etc/passwd",
        "/%2e%2e/README.md",
        "/scratchcnn/server.py",
    ],
)
def test_nothing_else_is_served(server, path):
    status, kind, body = request(server, "GET", path)
    assert status == 404 and json.loads(body)["error"].startswith("no such page")


def test_model_endpoint(server, trained):
    status, _, body = request(server, "GET", "/api/model")
    info = json.loads(body)
    assert status == 200
    assert info["architecture"] == "seed" and info["classes"] == [str(d) for d in range(10)]
    assert [layer["name"] for layer in info["layers"]][0] == "Conv2D(1, 8, 3)"
    assert info["filters"]["shape"] == [8, 3, 3]
    np.testing.assert_allclose(
        info["filters"]["values"], trained.model.layers[0].params["weight"][:, 0], atol=1e-4
    )


def test_predict_png_bytes_matches_the_python_api(server, trained, digits):
    for png, _label in digits:
        status, kind, body = request(
            server, "POST", "/api/predict", png, {"Content-Type": "image/png"}
        )
        answer = json.loads(body)
        assert status == 200 and kind == "application/json"
        expected = trained.predict_proba(load_digit(png)[None])[0]
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-7)
        assert answer["prediction"] == str(int(expected.argmax()))
        assert np.array(answer["input"]).shape == (28, 28)
        assert "activations" not in answer
    right = sum(
        json.loads(request(server, "POST", "/api/predict", p, {"Content-Type": "image/png"})[2])[
            "prediction"
        ]
        == str(label)
        for p, label in digits
    )
    assert right >= 8


def pdf_of(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.convert("RGB").save(out, format="PDF", resolution=10)
    return out.getvalue()


def shown_page(answer: dict) -> np.ndarray:
    """The "page" of an answer: a PNG data URL, as grey values."""
    header, _, data = answer["page"].partition(",")
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))


def test_a_scanned_pdf_is_read_like_a_photo(server, trained, digits):
    """A PDF, sent as it is or as a data URL, is read from its first page, as the Python API
    reads the same file; the answer brings that page as the reader saw it, a PNG, for the page
    to draw (a browser draws no PDF), and a whole number's boxes lie on its digits there."""
    png, _ = digits[0]
    pdf = pdf_of(Image.open(io.BytesIO(png)))
    expected = trained.predict_proba(load_digit(pdf)[None])[0]
    seen = np.round(read_image(pdf).grey * 255)
    url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    for body, kind in ((pdf, "application/pdf"), (json.dumps({"image": url}), "application/json")):
        status, _, data = request(server, "POST", "/api/predict", body, {"Content-Type": kind})
        assert status == 200, data
        answer = json.loads(data)
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(shown_page(answer), seen)
    status, _, data = request(server, "POST", "/api/predict", png, {"Content-Type": "image/png"})
    assert status == 200 and "page" not in json.loads(data)  # the page has the picture itself

    row = np.hstack([np.asarray(Image.open(io.BytesIO(png)).convert("L")) for png, _ in digits[:3]])
    url = "data:application/pdf;base64," + base64.b64encode(pdf_of(Image.fromarray(row))).decode()
    status, _, data = request(
        server, "POST", "/api/predict", json.dumps({"image": url, "number": True}), JSON
    )
    assert status == 200, data
    answer = json.loads(data)
    page = shown_page(answer)
    boxes = [d["box"] for r in answer["rows"] for d in r["digits"]]
    assert len(boxes) == 3 and page.shape == (342, 1024)  # 1024 on the longer side
    for left, top, right, bottom in boxes:  # each box holds ink, in the page's own pixels
        assert 0 <= left < right <= page.shape[1] and 0 <= top < bottom <= page.shape[0]
        assert page[top:bottom, left:right].min() < 64


def test_a_pdf_of_several_pages_is_read_a_page_at_a_time(server, trained, digits):
    """ "page_number" (from 1) picks the page of a scan that is read and sent back, with how many
    there are; a page the PDF does not have, or a page number that is not one, is one error."""
    pages = [Image.open(io.BytesIO(png)).convert("RGB") for png, _ in digits[:3]]
    out = io.BytesIO()
    pages[0].save(out, format="PDF", resolution=10, save_all=True, append_images=pages[1:])
    pdf = out.getvalue()
    url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    for number in (1, 2, 3):
        status, _, data = request(
            server, "POST", "/api/predict", json.dumps({"image": url, "page_number": number}), JSON
        )
        assert status == 200, data
        answer = json.loads(data)
        picture = read_image(pdf, page=number - 1)
        expected = trained.predict_proba(find_digit(picture).image[None])[0]
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(shown_page(answer), np.round(picture.grey * 255))
        assert (answer["page_number"], answer["pages"]) == (number, 3)
    body = json.dumps({"image": url, "page_number": 2, "number": True})
    status, _, data = request(server, "POST", "/api/predict", body, JSON)
    assert status == 200, data
    answer = json.loads(data)
    assert (answer["page_number"], answer["pages"]) == (2, 3)
    assert [len(row["digits"]) for row in answer["rows"]] == [1]
    status, _, data = request(
        server, "POST", "/api/predict", pdf, {"Content-Type": "application/pdf"}
    )
    assert status == 200 and (json.loads(data)["page_number"], json.loads(data)["pages"]) == (1, 3)

    png_url = "data:image/png;base64," + base64.b64encode(digits[0][0]).decode()
    refusals = [
        ({"image": url, "page_number": 4}, "a PDF of 3 page(s) has no page 4"),
        ({"image": url, "page_number": 4, "number": True}, "a PDF of 3 page(s) has no page 4"),
        ({"image": png_url, "page_number": 2}, "not a PDF, so it has no page 2"),
    ] + [
        ({"image": url, "page_number": bad}, "page_number must be a whole number from 1")
        for bad in (0, -1, "2", 1.5, True, None)
    ]
    for body, message in refusals:
        status, _, data = request(server, "POST", "/api/predict", json.dumps(body), JSON)
        assert status == 400 and message in json.loads(data)["error"], (body, data)


def test_predict_data_url_json_with_activations(server, digits):
    png, _ = digits[0]
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    body = json.dumps({"image": url, "activations": True})
    status, _, data = request(
        server, "POST", "/api/predict", body, {"Content-Type": "application/json"}
    )
    answer = json.loads(data)
    assert status == 200
    shapes = [(a["layer"], a["shape"]) for a in answer["activations"]]
    assert shapes == [("Conv2D(1, 8, 3)", [8, 26, 26]), ("MaxPool2D(2)", [8, 13, 13])]
    for block in answer["activations"]:
        assert len(base64.b64decode(block["data"])) == np.prod(block["shape"])
    # a text/plain data URL is what a browser sends cross-site without asking: refused
    status, _, data = request(server, "POST", "/api/predict", url, {"Content-Type": "text/plain"})
    assert status == 415 and "Content-Type" in json.loads(data)["error"]


JSON = {"Content-Type": "application/json"}


def huge_png() -> bytes:
    side = int(MAX_PIXELS**0.5) + 10  # just over the decoded-size limit, a few KB of PNG
    return png_bytes(np.full((side, side), 255, np.uint8))


BAD = [
    (
        "wrong type",
        b"hello",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        "Content-Type",
    ),
    ("no type", b"hello", {}, 415, "Content-Type"),
    ("malformed json", b"{not json", {"Content-Type": "application/json"}, 400, "malformed JSON"),
    ("json without image", b'{"img": 1}', {"Content-Type": "application/json"}, 400, "image"),
    ("json list", b"[1, 2]", {"Content-Type": "application/json"}, 400, "object"),
    ("bad base64", b'{"image": "data:image/png;base64,@@@@"}', JSON, 400, "base64"),
    ("not base64 url", b'{"image": "data:image/png,abc"}', JSON, 400, "base64"),
    ("gif data url", b'{"image": "data:image/gif;base64,R0lGOD"}', JSON, 415, "gif"),
    ("text/plain", b"data:image/png;base64,AAAA", {"Content-Type": "text/plain"}, 415, "Type"),
    (
        "text as image",
        b"just some text",
        {"Content-Type": "image/png"},
        400,
        "not a readable image",
    ),
    ("empty", b"", {"Content-Type": "image/png"}, 400, "empty"),
    ("one pixel", None, {"Content-Type": "image/png"}, 400, "1x1"),
    ("blank canvas", None, {"Content-Type": "image/png"}, 400, "no digit found"),
    ("huge image", None, {"Content-Type": "image/png"}, 400, "too large"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_requests_get_a_clear_4xx(server, case):
    name, body, headers, expected, needle = case
    if name == "one pixel":
        body = png_bytes(np.zeros((1, 1), np.uint8))
    elif name == "blank canvas":
        body = png_bytes(np.full((280, 280), 255, np.uint8))
    elif name == "huge image":
        body = huge_png()
    status, kind, data = request(server, "POST", "/api/predict", body, headers)
    assert status == expected and kind == "application/json"
    message = json.loads(data)["error"]
    assert needle in message and "Traceback" not in message


def test_body_size_is_capped(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=20)
    connection.putrequest("POST", "/api/predict")
    connection.putheader("Content-Type", "image/png")
    connection.putheader("Content-Length", str(MAX_BODY + 1))
    connection.endheaders()
    response = connection.getresponse()  # answered before we send a single body byte
    assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    connection.close()


def test_missing_length_wrong_method_unknown_endpoint(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=20)
    connection.putrequest("POST", "/api/predict")
    connection.putheader("Content-Type", "image/png")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411
    connection.close()
    assert request(server, "GET", "/api/predict")[0] == 405
    assert request(server, "POST", "/api/model", b"x", {"Content-Type": "image/png"})[0] == 404


def test_concurrent_requests(server, digits):
    def ask(k):
        png, _ = digits[k % len(digits)]
        status, _, body = request(
            server, "POST", "/api/predict?activations=1", png, {"Content-Type": "image/png"}
        )
        return k % len(digits), status, json.loads(body)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(80)))
    assert all(status == 200 for _, status, _ in results)
    first = {}
    for k, _, answer in results:  # the same image always gets the same answer
        first.setdefault(k, answer["probabilities"])
        np.testing.assert_allclose(answer["probabilities"], first[k], rtol=1e-6)
        assert len(answer["activations"]) == 2


def test_a_net_the_user_built_trains_saves_loads_and_serves(mnist_dir, tmp_path, digits):
    # Any Sequential of the library's layers: the model file stores its layer list.
    from scratchcnn import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential

    layers = [
        Conv2D(1, 6, 5, padding=2),
        BatchNorm2D(6),
        ReLU(),
        MaxPool2D(2),
        Conv2D(6, 8, 3, stride=2),
        ReLU(),
        Flatten(),
        Dense(6 * 6 * 8, 10),
    ]
    clf = Classifier(Sequential(layers, seed=0))
    assert clf.architecture == "custom"
    images, labels = load("mnist", "train", mnist_dir)
    clf.fit(images[:3000], labels[:3000], epochs=2, batch_size=64, lr=0.05, momentum=0.9)
    path = tmp_path / "mine.npz"
    clf.save(path)
    loaded = Classifier.load(path)
    assert [repr(a) for a in loaded.model.layers] == [repr(b) for b in layers]
    test_x, test_y = load("mnist", "test", mnist_dir)
    np.testing.assert_array_equal(
        loaded.predict_proba(test_x[:200]), clf.predict_proba(test_x[:200])
    )
    accuracy = loaded.evaluate(test_x[:1000], test_y[:1000])["accuracy"]
    assert accuracy > 0.85, accuracy
    with serving(make_server(loaded, "127.0.0.1", 0)) as port:
        status, _, body = request(port, "GET", "/api/model")
        info = json.loads(body)
        assert status == 200 and info["architecture"] == "custom"
        assert info["layers"][0]["name"] == "Conv2D(1, 6, 5, padding=2)"
        correct = 0
        for image, label in digits:
            status, _, body = request(
                port, "POST", "/api/predict?activations=1", image, {"Content-Type": "image/png"}
            )
            answer = json.loads(body)
            assert status == 200 and len(answer["activations"]) == 3  # 2 convs and the pool
            correct += answer["index"] == label
        assert correct >= 8


# -- teaching the served model the page's examples (POST /api/tune) ------------------------------


@pytest.fixture(scope="module")
def mirrored(mnist_dir):
    """48 drawings of 2, 3, 4 and 7 written mirrored (a style MNIST has none of), as the page
    sends them: the 28x28 digit a prediction answered with, and what it really is."""
    images, labels = load("mnist", "test", mnist_dir)
    pick = np.flatnonzero(np.isin(labels, (2, 3, 4, 7)))[:48]
    return [
        {"pixels": image[:, ::-1].tolist(), "label": int(label)}
        for image, label in zip(images[pick], labels[pick], strict=True)
    ]


def post_json(port, path, payload):
    status, _, data = request(port, "POST", path, json.dumps(payload).encode(), JSON)
    return status, json.loads(data)


def test_the_page_teaches_the_served_model_its_examples_and_can_go_back(
    trained, mnist_dir, mirrored, tmp_path
):
    with serving(make_server(trained.copy(), "127.0.0.1", 0, data_dir=str(mnist_dir))) as port:
        before = json.loads(request(port, "GET", "/api/model")[2])
        assert before["tuned"] is False
        status, answer = post_json(
            port, "/api/tune", {"examples": mirrored, "epochs": 2, "mix": 3000}
        )
        assert status == 200, answer
        report = answer["report"]
        # a quarter of each digit's 12 or so examples kept aside, the rest trained on
        assert report["held_out"] + report["trained_on"] == len(mirrored)
        assert report["held_out"] >= 8 and report["dataset_samples"] == 3000
        assert report["after"]["trained_on"] > report["before"]["trained_on"]
        assert report["after"]["validation"] > 0.8  # it still reads MNIST
        assert json.loads(request(port, "GET", "/api/model")[2])["tuned"] is True
        # the tuned model is the one that answers now, and the one the page can save
        status, kind, body = request(port, "GET", "/api/model/file")
        assert status == 200 and kind == "application/octet-stream"
        (tmp_path / "tuned.npz").write_bytes(body)
        tuned = Classifier.load(tmp_path / "tuned.npz")
        assert tuned.training["fine_tune"]["trained_on"] == report["trained_on"]
        # going back serves the model from before, once
        assert post_json(port, "/api/tune/undo", {})[0] == 200
        assert json.loads(request(port, "GET", "/api/model")[2])["tuned"] is False
        status, answer = post_json(port, "/api/tune/undo", {})
        assert status == 409 and "not been tuned" in answer["error"]


BAD_TUNES = [
    ("no examples", {}, 400, '"examples"'),
    ("empty list", {"examples": []}, 400, '"examples"'),
    ("not objects", {"examples": [1, 2]}, 400, "each example"),
    ("no label", {"examples": [{"pixels": [[0] * 28] * 28}]}, 400, "label"),
    ("label out of range", {"examples": [{"pixels": [[0] * 28] * 28, "label": 10}]}, 400, "label"),
    ("bad pixels", {"examples": [{"pixels": [[0] * 27] * 28, "label": 1}]}, 400, "28x28"),
    ("too many", {"examples": [{"pixels": [[0]], "label": 1}] * 201}, 400, "at most 200"),
    (
        "epochs",
        {"examples": [{"pixels": [[0] * 28] * 28, "label": 1}], "epochs": 99},
        400,
        "epochs",
    ),
]


@pytest.mark.parametrize("case", BAD_TUNES, ids=[c[0] for c in BAD_TUNES])
def test_a_bad_tuning_request_gets_one_clear_error_and_changes_nothing(server, case):
    _, payload, expected, needle = case
    status, answer = post_json(server, "/api/tune", payload)
    assert status == expected and needle in answer["error"]
    assert json.loads(request(server, "GET", "/api/model")[2])["tuned"] is False


def test_tuning_without_the_dataset_says_so(trained, tmp_path, monkeypatch, mirrored):
    monkeypatch.setenv("SCRATCHCNN_MIRRORS", "http://127.0.0.1:9/")  # nothing to download from
    monkeypatch.delenv("SCRATCHCNN_DATA", raising=False)  # searched after data_dir
    with serving(make_server(trained, "127.0.0.1", 0, data_dir=str(tmp_path))) as port:
        status, answer = post_json(port, "/api/tune", {"examples": mirrored[:4]})
        assert status == 409 and "tuning mixes in mnist images" in answer["error"]
        assert json.loads(request(port, "GET", "/api/model")[2])["tuned"] is False
