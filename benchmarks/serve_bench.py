"""Predictions per second through ``scratchcnn serve``'s API, from a loop of requests.

    python benchmarks/serve_bench.py MODEL [--requests 500] [--activations]

Starts the server in this process on a free port on 127.0.0.1, then sends sequential
POST /api/predict requests, each a 280x280 PNG like the page's canvas (a test digit, dark on
white), over one keep-alive connection, and prints requests per second.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import threading
import time

import numpy as np
from PIL import Image, ImageDraw

from scratchcnn.app import Classifier
from scratchcnn.app.server import make_server


def canvas_png(seed: int = 0) -> bytes:
    """A 280x280 white canvas with a thick dark stroke, like the page sends."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (280, 280), 255)
    points = (rng.random((6, 2)) * 160 + 60).round().tolist()
    ImageDraw.Draw(image).line([tuple(p) for p in points], fill=0, width=18, joint="curve")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--activations", action="store_true", help="also return feature maps")
    args = parser.parse_args()
    clf = Classifier.load(args.model)
    server = make_server(clf, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    bodies = [canvas_png(seed) for seed in range(20)]
    path = "/api/predict" + ("?activations=1" if args.activations else "")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def ask(body: bytes) -> dict:
        connection.request("POST", path, body=body, headers={"Content-Type": "image/png"})
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200, data
        return json.loads(data)

    for body in bodies[:5]:  # warm-up
        ask(body)
    start = time.perf_counter()
    for k in range(args.requests):
        ask(bodies[k % len(bodies)])
    seconds = time.perf_counter() - start
    print(
        f"{args.requests} requests ({clf.architecture} model, 280x280 PNG each"
        f"{', with activations' if args.activations else ''}): {seconds:.2f} s, "
        f"{args.requests / seconds:.0f} predictions/s"
    )
    server.shutdown()


if __name__ == "__main__":
    main()
