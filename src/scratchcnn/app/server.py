"""``scratchcnn serve``: a local web page to draw a digit and watch the network respond.

Standard library only (``http.server``), one page and a small JSON API:

    GET  /                 the page (HTML, JS and CSS shipped in the package: no CDN, no fonts)
    GET  /api/model        architecture, metadata and the first layer's filters
    POST /api/predict      an image - PNG/JPEG bytes, a data URL as text, or JSON
                           {"image": "<data URL>", "activations": true} - in; the
                           probabilities, the 28x28 input the network saw and, when asked, the
                           feature maps of every convolution and pooling layer out

Safe by default: it binds to 127.0.0.1, caps request bodies, answers every bad request (wrong
type, malformed JSON, unreadable or huge image, unknown path) with a 4xx and a one-line JSON
error, and never touches the filesystem on behalf of a request: the page's files are a fixed
whitelist read from the package.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import ImageError
from .classifier import Classifier, default_model
from .photos import load_digit

MAX_BODY = 5 * 1024 * 1024  # bytes: a phone photo fits, a flood does not
STATIC = {  # the only files ever served, all from the package
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
IMAGE_TYPES = {"image/png", "image/jpeg", "application/octet-stream"}
log = logging.getLogger("scratchcnn.app.server")


class RequestError(Exception):
    """A bad request: becomes a 4xx response with a one-line message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def quantize_maps(maps: np.ndarray) -> dict:
    """Feature maps (H, W, C) -> {"shape": [C, H, W], "data": base64 uint8}, each channel
    scaled to 0-255 on its own (for display: the page draws them as grey images)."""
    chw = np.moveaxis(maps.astype(np.float32), -1, 0)
    low = chw.min(axis=(1, 2), keepdims=True)
    span = chw.max(axis=(1, 2), keepdims=True) - low
    scaled = np.where(span > 0, (chw - low) / np.where(span > 0, span, 1), 0)
    pixels = np.rint(scaled * 255).astype(np.uint8)
    return {"shape": list(pixels.shape), "data": base64.b64encode(pixels.tobytes()).decode()}


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


class Service:
    """What the handlers call: the model, and the answers it gives (thread-safe: inference
    keeps no state in the layers)."""

    def __init__(self, clf: Classifier) -> None:
        self.clf = clf
        self.shown = [(i, clf.model.layers[i]) for i in clf.model.feature_map_layers()]

    def model_info(self) -> dict:
        info = self.clf.info()
        model = self.clf.model
        return {
            "architecture": info["architecture"],
            "dataset": info["dataset"],
            "classes": info["classes"],
            "num_parameters": info["num_parameters"],
            "metrics": info["metrics"],
            "layers": [
                {
                    "name": repr(layer),
                    "output_shape": list(shape),
                    "params": int(sum(v.size for v in layer.params.values())),
                }
                for layer, shape in zip(model.layers, model.output_shapes, strict=True)
            ],
            "filters": self._filters(),
        }

    def _filters(self) -> dict | None:
        """The first convolution's kernels on the first input channel (None without one)."""
        try:
            conv, weight = self.clf.model.first_filters()  # (F, KH, KW)
        except ValueError:
            return None
        return {
            "layer": repr(conv),
            **quantize_maps(np.moveaxis(weight, 0, -1)),
            "values": weight.round(4).tolist(),
        }

    def predict(self, image: bytes, activations: bool) -> dict:
        try:
            digit = load_digit(image, "uploaded image")
        except ImageError as err:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(err)) from None
        probs = self.clf.predict_proba(digit[None])[0]
        best = int(probs.argmax())
        answer = {
            "prediction": self.clf.classes[best],
            "index": best,
            "probabilities": [float(p) for p in probs],
            "classes": self.clf.classes,
            "input": digit.tolist(),
        }
        if activations:
            outputs = self.clf.model.activations(self.clf.prepare(digit[None]))
            answer["activations"] = [
                {"layer": repr(layer), "index": i, **quantize_maps(outputs[i][0])}
                for i, layer in self.shown
            ]
        return answer


class Handler(BaseHTTPRequestHandler):
    service: Service
    server_version = "scratchcnn"
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries its Content-Length
    # Headers and body go out in two writes; without this, Nagle's algorithm holds the body
    # back until the client's delayed ACK (~40 ms a request on keep-alive connections).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _guarded(self, work) -> None:
        try:
            work()
        except RequestError as err:
            self._json(err.status, {"error": str(err)})
        except Exception:  # a bug: log it here, tell the client nothing more
            log.exception("internal error on %s %s", self.command, self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._guarded(self._get)

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/model":
            self._json(HTTPStatus.OK, self.service.model_info())
            return
        if path == "/api/predict":
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use POST for /api/predict")
        if path not in STATIC:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        name, content_type = STATIC[path]
        body = resources.files("scratchcnn.app.web").joinpath(name).read_bytes()
        self._send(HTTPStatus.OK, body, content_type)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True  # we cannot tell where this request ends
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length header required")
        try:
            size = int(length)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if size < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if size > MAX_BODY:
            self.close_connection = True  # do not read a flood just to discard it
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {size:,} bytes is over the {MAX_BODY:,}-byte limit",
            )
        body = self.rfile.read(size)
        if len(body) != size:
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body shorter than Content-Length")
        return body

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/api/predict":
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        body = self._read_body()
        flag = parse_qs(url.query).get("activations", ["0"])[0].lower()
        activations = flag in ("1", "true", "yes")
        if kind in IMAGE_TYPES:
            image = body
        elif kind == "text/plain":
            image = decode_data_url(body.decode("ascii", errors="replace"))
        elif kind == "application/json":
            try:
                request = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise RequestError(HTTPStatus.BAD_REQUEST, "malformed JSON") from None
            if not isinstance(request, dict) or not isinstance(request.get("image"), str):
                raise RequestError(HTTPStatus.BAD_REQUEST, 'JSON must be {"image": "<data URL>"}')
            image = decode_data_url(request["image"])
            activations = activations or bool(request.get("activations"))
        else:
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {kind or '(none)'}: send image/png, image/jpeg, "
                "text/plain (a data URL) or application/json",
            )
        self._json(HTTPStatus.OK, self.service.predict(image, activations))


def make_server(clf: Classifier, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free one); call ``serve_forever``."""
    handler = type("BoundHandler", (Handler,), {"service": Service(clf)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(model_path: str | None, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve the page for ``model_path`` (None: the model bundled with scratchcnn)."""
    clf = Classifier.load(model_path or default_model())
    server = make_server(clf, host, port)
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
