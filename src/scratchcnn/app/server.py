"""``scratchcnn serve``: a local web page to watch a CNN learn, predict and explain itself.

Standard library only (``http.server``). The page (HTML, JS and CSS shipped in the package: no
CDN, no fonts) walks a learner through five tabs - Data, Train, Evaluate, Draw and explain,
Inside the network - over this JSON API:

    GET  /api/model             the served model: layers, metadata, first-layer filters
    GET  /api/data              samples and averages of each class, counts, pixel statistics
    GET  /api/evaluate          the confusion matrix and the most confident test mistakes
    POST /api/predict           an image in (PNG/JPEG bytes, or {"image": "<data URL>"}):
                                probabilities, the 28x28 input, "unsure", feature maps on
                                request; {"number": true} reads a whole number, with boxes;
                                of a PDF, page {"page_number": k} (from 1) is read, and
                                comes back as a PNG ("page", with "pages": how many)
    POST /api/explain           {"image", "class"}: saliency, Grad-CAM, max-pool masks
    POST /api/step              {"image", "label", "lr"}: one SGD step made visible
    POST /api/transform         {"image", "rotate", "scale", ...}: the robustness explorer
    POST /api/train/start       {"recipe", "images", "lr"}: 409 while a training runs
    POST /api/train/stop, /api/train/resume, /api/train/use (serve the trained model)
    GET  /api/train/events      Server-Sent Events: the training's progress as it happens
    GET  /api/train/model       the trained model file, to download
    POST /api/tune              {"examples": [{"pixels" or "image", "label"}, ...]}: teach the
                                served model the page's drawings (``finetune.fine_tune``) and
                                serve the tuned copy; /api/tune/undo serves the one before
    GET  /api/model/file        the served model's file, to download

Safe by default, as a local server that changes state must be:

* it binds 127.0.0.1, and refuses requests whose Host is not the bound address or localhost
  (a DNS-rebinding page cannot reach it by another name);
* every POST must come from the page itself: a foreign Origin is refused, and the endpoints
  that change state take only ``application/json`` (which a browser never sends cross-site
  without asking); request bodies are capped, and an image's size is checked before it is
  decoded (``MAX_PIXELS``), with at most ``DECODERS`` decoded at a time;
* sockets time out, the listen backlog takes a burst of connections, a body that was not read
  is never parsed as the next request (the connection closes instead), every error - 501,
  414 and 431 included - has a JSON body, and request paths are escaped in the log.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..data import load
from ..errors import ImageError, ScratchCNNError
from .classifier import Classifier, default_model
from .explain import explain, one_step, transform
from .finetune import LabelledImages, fine_tune
from .lab import MAX_IMAGES, BusyError, Lab, data_summary, mistakes_summary
from .photos import Digit, Picture, find_digit, is_pdf, read_image
from .reader import read_number

MAX_BODY = 5 * 1024 * 1024  # bytes: a phone photo fits, a flood does not
MAX_PIXELS = 4_000_000  # an upload's decoded size: a 2000x2000 photo, 16 MB in RGBA
DECODERS = 2  # images decoded at once: with MAX_PIXELS, this bounds the memory they take
TIMEOUT = 30  # seconds a client may take to send a request
MAX_EXAMPLES = 200  # drawings a page may send to tune on: 200 of them fit well in MAX_BODY
STATIC = {  # the only files ever served, all from the package
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
IMAGE_TYPES = {"image/png", "image/jpeg", "application/pdf", "application/octet-stream"}
log = logging.getLogger("scratchcnn.app.server")


class RequestError(Exception):
    """A bad request: becomes a 4xx response with a one-line JSON message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def quantize_maps(maps: np.ndarray) -> dict:
    """Maps (H, W, C) -> {"shape": [C, H, W], "data": base64 uint8}, each channel scaled to
    0-255 on its own (for display: the page draws them as grey images)."""
    chw = np.moveaxis(np.asarray(maps, dtype=np.float32), -1, 0)
    low = chw.min(axis=(1, 2), keepdims=True)
    span = chw.max(axis=(1, 2), keepdims=True) - low
    scaled = np.where(span > 0, (chw - low) / np.where(span > 0, span, 1), 0)
    pixels = np.rint(scaled * 255).astype(np.uint8)
    return {"shape": list(pixels.shape), "data": base64.b64encode(pixels.tobytes()).decode()}


def signed_map(values: np.ndarray) -> dict:
    """A 2-D map of signed values with its scale: {"values", "max"} (rounded, for JSON)."""
    values = np.asarray(values, dtype=np.float64)
    return {"values": values.round(6).tolist(), "max": float(np.abs(values).max(initial=0.0))}


def decode_data_url(text: str) -> bytes:
    """``data:image/png;base64,....`` (or bare base64) -> bytes."""
    text = text.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise RequestError(HTTPStatus.BAD_REQUEST, "data URL must be base64-encoded")
        kind = header[5:].split(";")[0]
        if kind and kind not in IMAGE_TYPES:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported image type {kind}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(HTTPStatus.BAD_REQUEST, "image is not valid base64") from None


def page_of(image: bytes, picture: Picture, number: int = 1) -> dict:
    """For a PDF, which a browser cannot draw in an image: {"page": a PNG data URL of page
    ``number`` (from 1) as it was read (the boxes of a reading are in its pixels),
    "page_number", "pages": how many the PDF has}; {} for a picture the page has itself."""
    if not is_pdf(image):
        return {}
    png = "data:image/png;base64," + base64.b64encode(picture.png()).decode()
    return {"page": png, "page_number": number, "pages": picture.pages}


def _number(request: dict, key: str, low: float, high: float, default: float) -> float:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} must be a number from {low} to {high}")
    return float(value)


class Service:
    """What the handlers call: the served model, the lab, and the answers they give. The
    served model can be swapped for a freshly trained one (``use``); inference keeps no state
    in the layers, and explanations work on copies, so requests run side by side."""

    def __init__(self, clf: Classifier, data_dir: str | None = None) -> None:
        self.clf = clf
        self.data_dir = data_dir
        self.lab = Lab(clf.dataset, data_dir)
        self.decoders = threading.BoundedSemaphore(DECODERS)
        self._summaries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._tuning = threading.Lock()  # one tuning at a time
        self.before_tuning: Classifier | None = None  # what ``untune`` goes back to

    # -- the served model ----------------------------------------------------------------------
    def model_info(self) -> dict:
        clf = self.clf
        info = clf.info()
        model = clf.model
        return {
            "architecture": info["architecture"],
            "dataset": info["dataset"],
            "classes": info["classes"],
            "num_parameters": info["num_parameters"],
            "metrics": info["metrics"],
            "threshold": clf.threshold,
            "tuned": "fine_tune" in clf.training,
            "layers": [
                {
                    "name": repr(layer),
                    "output_shape": list(shape),
                    "params": int(sum(v.size for v in layer.params.values())),
                }
                for layer, shape in zip(model.layers, model.output_shapes, strict=True)
            ],
            "filters": self._filters(clf),
        }

    @staticmethod
    def _filters(clf: Classifier) -> dict | None:
        """The first convolution's kernels on the first input channel (None without one)."""
        try:
            conv, weight = clf.model.first_filters()  # (F, KH, KW)
        except ValueError:
            return None
        return {
            "layer": repr(conv),
            **quantize_maps(np.moveaxis(weight, 0, -1)),
            "values": weight.round(4).tolist(),
        }

    def digit(self, image: bytes, page: int = 1) -> tuple[Digit, dict]:
        """The uploaded image's digit (of a PDF, on page ``page``, from 1), decoded one at a
        time per ``DECODERS``, and what the page needs to show a PDF's page (``page_of``)."""
        with self.decoders:
            try:
                picture = read_image(image, "uploaded image", MAX_PIXELS, page - 1)
                return find_digit(picture, "uploaded image"), page_of(image, picture, page)
            except ImageError as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(err)) from None

    def predict(self, image: bytes, activations: bool, page: int = 1) -> dict:
        clf = self.clf
        found, page_shown = self.digit(image, page)
        digit = found.image
        probs = clf.predict_proba(digit[None])[0]
        best = int(probs.argmax())
        answer = {
            "prediction": clf.classes[best],
            "index": best,
            "probabilities": [float(p) for p in probs],
            "unsure": bool(probs[best] < clf.threshold),
            "classes": clf.classes,
            "input": digit.tolist(),
            **page_shown,
        }
        if activations:
            outputs = clf.model.activations(clf.prepare(digit[None]))
            answer["activations"] = [
                {"layer": repr(clf.model.layers[i]), "index": i, **quantize_maps(outputs[i][0])}
                for i in clf.model.feature_map_layers()
            ]
        return answer

    def read(self, image: bytes, page: int = 1) -> dict:
        """The whole number in the uploaded image (of a PDF, on page ``page``, from 1)."""
        with self.decoders:
            try:
                picture = read_image(image, "uploaded image", MAX_PIXELS, page - 1)
                reading = read_number(self.clf, picture, "uploaded image").to_json()
                return {**reading, **page_of(image, picture, page)}
            except ImageError as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(err)) from None

    def _input(self, request: dict) -> np.ndarray:
        """The request's image as the 28x28 digit: a data URL, or {"pixels": 28x28 list}."""
        if isinstance(request.get("pixels"), list):
            pixels = np.asarray(request["pixels"])
            if (
                pixels.shape != (28, 28)
                or pixels.dtype.kind not in "iu"
                or pixels.min() < 0
                or pixels.max() > 255
            ):
                raise RequestError(HTTPStatus.BAD_REQUEST, "pixels must be 28x28 integers 0-255")
            return pixels.astype(np.uint8)
        if not isinstance(request.get("image"), str):
            raise RequestError(
                HTTPStatus.BAD_REQUEST, 'JSON needs "image" (a data URL) or "pixels"'
            )
        return self.digit(decode_data_url(request["image"]))[0].image

    def _class(self, request: dict, key: str) -> int:
        value, count = request.get(key), len(self.clf.classes)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{key} must be a class index 0-{count - 1}")
        return value

    def explain(self, request: dict) -> dict:
        clf = self.clf
        digit = self._input(request)
        x = clf.prepare(digit[None])
        if "class" in request:
            target = self._class(request, "class")
        else:
            target = int(clf.predict(digit[None])[0])
        result = explain(clf.model, x, target)
        return {
            "class": target,
            "input": digit.tolist(),
            "probabilities": [float(p) for p in result["probabilities"]],
            "saliency": signed_map(result["saliency"][..., 0]),
            "grad_cam": [
                {"layer": c["layer"], "index": c["index"], **signed_map(c["map"])}
                for c in result["grad_cam"]
            ],
            "pool_masks": [
                {
                    "layer": m["layer"],
                    "index": m["index"],
                    "mask": quantize_maps(m["mask"]),
                    "input": quantize_maps(m["input"]),
                }
                for m in result["pool_masks"]
            ],
        }

    def step(self, request: dict) -> dict:
        clf = self.clf
        digit = self._input(request)
        label = self._class(request, "label")
        lr = _number(request, "lr", 1e-4, 1.0, 0.1)
        result = one_step(clf.model, clf.prepare(digit[None]), label, lr)
        layers = []
        for change in result["layers"]:
            grad, update = change["grad"], change["update"]
            entry = {
                "layer": change["layer"],
                "index": change["index"],
                "grad_norm": change["grad_norm"],
                "update_norm": float(np.linalg.norm(update)),
                "weight_norm": change["weight_norm"],
            }
            if grad.ndim == 4:  # conv kernels, first input channel: (F, KH, KW) as maps
                entry["grad_maps"] = quantize_maps(np.moveaxis(grad[:, 0], 0, -1))
                entry["update_maps"] = quantize_maps(np.moveaxis(update[:, 0], 0, -1))
            layers.append(entry)
        return {
            "label": label,
            "lr": lr,
            "loss": result["loss"],
            "loss_after": result["loss_after"],
            "before": [float(p) for p in result["before"]],
            "after": [float(p) for p in result["after"]],
            "layers": layers,
        }

    def transform(self, request: dict) -> dict:
        clf = self.clf
        digit = self._input(request)
        moved = transform(
            digit,
            rotate=_number(request, "rotate", -180, 180, 0),
            scale=_number(request, "scale", 0.3, 3, 1),
            shift=(_number(request, "dy", -14, 14, 0), _number(request, "dx", -14, 14, 0)),
            thickness=int(_number(request, "thickness", -3, 3, 0)),
            noise=_number(request, "noise", 0, 1, 0),
        )
        probs = clf.predict_proba(moved[None])[0]
        best = int(probs.argmax())
        return {
            "input": moved.tolist(),
            "probabilities": [float(p) for p in probs],
            "prediction": clf.classes[best],
            "unsure": bool(probs[best] < clf.threshold),
            "threshold": clf.threshold,
        }

    # -- data and evaluation (computed once per model) ------------------------------------------
    def _summary(self, key: str, make) -> dict:
        with self._lock:
            if key not in self._summaries:
                try:
                    self._summaries[key] = make()
                except ScratchCNNError as err:
                    raise RequestError(HTTPStatus.NOT_FOUND, f"{err}") from None
            return self._summaries[key]

    def data(self) -> dict:
        return self._summary("data", lambda: data_summary(self.clf.dataset, self.data_dir))

    def evaluate(self) -> dict:
        clf = self.clf
        return self._summary(f"evaluate-{id(clf)}", lambda: mistakes_summary(clf, self.data_dir))

    # -- the lab -------------------------------------------------------------------------------
    def train_start(self, request: dict) -> dict:
        recipe = request.get("recipe", "tiny")
        images = int(_number(request, "images", 100, MAX_IMAGES, MAX_IMAGES))
        lr = _number(request, "lr", 1e-4, 1.0, 0.05)
        try:
            session = self.lab.start(str(recipe), images, lr)
        except BusyError as err:
            raise RequestError(HTTPStatus.CONFLICT, str(err)) from None
        except ScratchCNNError as err:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(err)) from None
        return session.describe()

    def train_stop(self) -> dict:
        session = self._session()
        try:
            session.stop()
        except ScratchCNNError as err:
            raise RequestError(HTTPStatus.CONFLICT, str(err)) from None
        return {"state": "stopping"}

    def train_resume(self) -> dict:
        try:
            return self.lab.resume().describe()
        except ScratchCNNError as err:
            raise RequestError(HTTPStatus.CONFLICT, str(err)) from None

    def train_use(self) -> dict:
        session = self._session()
        if session.state != "done":
            raise RequestError(HTTPStatus.CONFLICT, "the training has not finished")
        self.clf, self.before_tuning = session.clf, None
        return {"architecture": self.clf.architecture, "metrics": self.clf.metrics}

    # -- teaching it your handwriting ----------------------------------------------------------
    def tune(self, request: dict) -> dict:
        """Fine-tune a copy of the served model on the page's labelled drawings
        (``finetune.fine_tune``: a share held out, the rest mixed with the model's dataset),
        then serve the tuned copy. ``examples``: a list of {"pixels": 28x28 (the digit a
        prediction answered with) or "image": a data URL, "label": class index}."""
        examples = request.get("examples")
        if not isinstance(examples, list) or not examples:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, 'JSON needs "examples": a list of {"pixels", "label"}'
            )
        if len(examples) > MAX_EXAMPLES:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"at most {MAX_EXAMPLES} examples, got {len(examples)}"
            )
        if not all(isinstance(example, dict) for example in examples):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'each example is {"pixels", "label"}')
        images = np.stack([self._input(example) for example in examples])
        labels = np.array([self._class(example, "label") for example in examples])
        names = [f"example {i + 1}" for i in range(len(examples))]
        epochs = int(_number(request, "epochs", 1, 10, 3))
        mix = int(_number(request, "mix", 100, MAX_IMAGES, 6000))
        if not self._tuning.acquire(blocking=False):
            raise RequestError(HTTPStatus.CONFLICT, "the model is being tuned already")
        try:
            base = self.clf
            try:
                dataset = load(base.dataset, "train", self.data_dir)
            except ScratchCNNError as err:
                raise RequestError(
                    HTTPStatus.CONFLICT, f"tuning mixes in {base.dataset} images, not found: {err}"
                ) from None
            tuned = base.copy()
            report = fine_tune(
                tuned, LabelledImages(images, labels, names), dataset, epochs, base_samples=mix
            )
            self.before_tuning, self.clf = base, tuned
        finally:
            self._tuning.release()
        return {"report": report, "metrics": tuned.metrics}

    def untune(self) -> dict:
        """Serve the model from before the last tuning again."""
        if self.before_tuning is None:
            raise RequestError(HTTPStatus.CONFLICT, "the model has not been tuned")
        self.clf, self.before_tuning = self.before_tuning, None
        return {"architecture": self.clf.architecture, "metrics": self.clf.metrics}

    def _session(self):
        if self.lab.session is None:
            raise RequestError(HTTPStatus.CONFLICT, "no training has been started")
        return self.lab.session


class Handler(BaseHTTPRequestHandler):
    service: Service
    allowed_hosts: set[str] | None  # None: bound to a public address, any name reaches it
    allowed_origins: set[str]
    server_version = "scratchcnn"
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries its Content-Length
    timeout = TIMEOUT  # a client that stalls cannot hold a thread forever
    # Headers and body go out in two writes; without this, Nagle's algorithm holds the body
    # back until the client's delayed ACK (~40 ms a request on keep-alive connections).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
        # The path is the client's: escape it, so it cannot write terminal escapes.
        line = (format % args).encode("unicode_escape").decode("ascii")
        log.info("%s %s", self.address_string(), line)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """http.server's own errors (400, 414, 431, 501, ...) as JSON too."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        text = message or status.phrase
        self._json(status, {"error": text})

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in headers:
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload, allow_nan=False).encode(), "application/json")

    def _guarded(self, work) -> None:
        try:
            self._check_host()
            work()
        except RequestError as err:
            self._json(err.status, {"error": str(err)})
        except ScratchCNNError as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug: log it here, tell the client nothing more
            log.exception("internal error on %s", self.command)
            self.close_connection = True
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def _check_host(self) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.MISDIRECTED_REQUEST, "unknown Host: use the address the server printed"
            )

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._guarded(self._get)

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    # -- GET --------------------------------------------------------------------------------------
    def _get(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        routes = {
            "/api/model": self.service.model_info,
            "/api/data": self.service.data,
            "/api/evaluate": self.service.evaluate,
        }
        if path in routes:
            self._json(HTTPStatus.OK, routes[path]())
            return
        if path == "/api/train/events":
            self._events(parse_qs(url.query).get("since", ["0"])[0])
            return
        if path == "/api/train/model":
            self._download()
            return
        if path == "/api/model/file":
            self._send_model(self.service.clf, "model.npz")
            return
        if path in POSTS:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"use POST for {path}")
        if path.startswith("/api/"):
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        if path not in STATIC:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        name, content_type = STATIC[path]
        body = resources.files("scratchcnn.app.web").joinpath(name).read_bytes()
        self._send(HTTPStatus.OK, body, content_type)

    def _events(self, since: str) -> None:
        """Server-Sent Events: each training event as ``data: {...}``, until the training
        ends or the page goes away; a comment every 10 s keeps proxies from closing it."""
        session = self.service.lab.session
        if session is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "no training has been started")
        seq = int(since) if since.isdigit() else 0
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        quiet = time.monotonic()
        while True:
            events = session.events_since(seq, timeout=1.0)
            for event in events:
                self.wfile.write(f"data: {json.dumps(event, allow_nan=False)}\n\n".encode())
                seq = event["seq"] + 1
            if events:
                quiet = time.monotonic()
            elif time.monotonic() - quiet > 10:
                self.wfile.write(b": waiting\n\n")
                quiet = time.monotonic()
            self.wfile.flush()
            if session.state not in ("running", "starting") and seq >= len(session.events):
                return

    def _download(self) -> None:
        session = self.service.lab.session
        if session is None or session.state != "done":
            raise RequestError(HTTPStatus.CONFLICT, "no finished training to download")
        self._send_model(session.clf, "lab-model.npz")

    def _send_model(self, clf: Classifier, name: str) -> None:
        """``clf``'s model file, as a download named ``name``."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            clf.save(path)
            body = path.read_bytes()
        self._send(
            HTTPStatus.OK,
            body,
            "application/octet-stream",
            [("Content-Disposition", f'attachment; filename="{name}"')],
        )

    # -- POST -------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # we read Content-Length bodies only
            raise RequestError(HTTPStatus.NOT_IMPLEMENTED, "chunked bodies are not supported")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True  # we cannot tell where this request ends
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length header required")
        if not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        size = int(length)
        if size > MAX_BODY:
            self.close_connection = True  # do not read a flood just to discard it
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {size:,} bytes is over the {MAX_BODY:,}-byte limit",
            )
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body shorter than Content-Length")
        return body

    def _check_origin(self) -> None:
        """A POST from another site's page is refused (browsers always send Origin then)."""
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.allowed_origins:
            raise RequestError(HTTPStatus.FORBIDDEN, "cross-site request refused")

    def _post(self) -> None:
        url = urlsplit(self.path)
        # Read (or refuse) the body before anything else: an unread body must never be
        # taken for the next request on this connection.
        body = self._read_body()
        self._check_origin()
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if url.path not in POSTS:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
        if url.path == "/api/predict":
            self._predict(url, kind, body)
            return
        if kind != "application/json":  # state-changing endpoints take JSON only
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"{url.path} takes application/json"
            )
        request = self._parse_json(body)
        service = self.service
        handlers = {
            "/api/explain": lambda: service.explain(request),
            "/api/step": lambda: service.step(request),
            "/api/transform": lambda: service.transform(request),
            "/api/train/start": lambda: service.train_start(request),
            "/api/train/stop": service.train_stop,
            "/api/train/resume": service.train_resume,
            "/api/train/use": service.train_use,
            "/api/tune": lambda: service.tune(request),
            "/api/tune/undo": service.untune,
        }
        self._json(HTTPStatus.OK, handlers[url.path]())

    @staticmethod
    def _parse_json(body: bytes) -> dict:
        try:
            request = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "malformed JSON") from None
        if not isinstance(request, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "JSON must be an object")
        return request

    def _predict(self, url, kind: str, body: bytes) -> None:
        flag = parse_qs(url.query).get("activations", ["0"])[0].lower()
        activations = flag in ("1", "true", "yes")
        number, page = False, 1
        if kind in IMAGE_TYPES:
            image = body
        elif kind == "application/json":
            request = self._parse_json(body)
            if not isinstance(request.get("image"), str):
                raise RequestError(HTTPStatus.BAD_REQUEST, 'JSON must be {"image": "<data URL>"}')
            image = decode_data_url(request["image"])
            activations = activations or bool(request.get("activations"))
            number = bool(request.get("number"))
            page = request.get("page_number", 1)
            if isinstance(page, bool) or not isinstance(page, int) or page < 1:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST, "page_number must be a whole number from 1"
                )
        else:
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {kind or '(none)'}: send image/png, image/jpeg "
                "or application/json",
            )
        service = self.service
        answer = service.read(image, page) if number else service.predict(image, activations, page)
        self._json(HTTPStatus.OK, answer)


POSTS = {
    "/api/predict",
    "/api/explain",
    "/api/step",
    "/api/transform",
    "/api/train/start",
    "/api/train/stop",
    "/api/train/resume",
    "/api/train/use",
    "/api/tune",
    "/api/tune/undo",
}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of connects waits in the backlog instead of a reset


def make_server(
    clf: Classifier,
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | None = None,
    timeout: float = TIMEOUT,
) -> Server:
    """A server bound to ``host:port`` (port 0: any free one); call ``serve_forever``.
    ``data_dir``: where the lab finds the dataset; ``timeout``: seconds a client may take."""
    handler = type(
        "BoundHandler", (Handler,), {"service": Service(clf, data_dir), "timeout": timeout}
    )
    server = Server((host, port), handler)
    bound = server.server_address[1]
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    local = host in ("127.0.0.1", "localhost", "::1")
    # On this machine only, the page answers to its own names alone (against DNS rebinding).
    hosts = {f"{n}:{bound}" for n in names} | (names if bound == 80 else set())
    handler.allowed_hosts = hosts if local else None
    handler.allowed_origins = {f"http://{n}:{bound}" for n in names} | (
        {f"http://{n}" for n in names} if bound == 80 else set()
    )
    return server


def serve(
    model_path: str | None, host: str = "127.0.0.1", port: int = 8000, data_dir: str | None = None
) -> int:
    """Serve the page for ``model_path`` (None: the model bundled with scratchcnn)."""
    clf = Classifier.load(model_path or default_model())
    server = make_server(clf, host, port, data_dir)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bound_host, bound_port = server.server_address[:2]
    which = model_path or f"the bundled model ({default_model().name})"
    print(
        f"Serving {which} ({clf.architecture} on {clf.dataset}) at "
        f"http://{bound_host}:{bound_port}/  (Ctrl-C to stop)",
        flush=True,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Warning: listening on {host}: other machines can reach this page.", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.")
    finally:
        server.server_close()
    return 0
