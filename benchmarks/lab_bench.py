"""The learning lab's targets, measured through the server as the page uses it.

    python benchmarks/lab_bench.py --data-dir ../shared/data/mnist [--images 59000]

Starts ``scratchcnn serve``'s server (the bundled model) on a free port, starts the "tiny"
training of the page's Train tab over HTTP, reads its Server-Sent Events, and meanwhile sends
POST /api/predict as the page does while a learner draws (a 280x280 canvas PNG, with the
feature maps; one request at a time, the next 150 ms after the last was sent, or at once if it
took longer; ``--pace 0`` sends them back to back) and times each.

Reports: the training's seconds and its validation accuracy on the 1,000
held-out digits, the longest gap between two updates of the curve, and the latency of the
predictions answered while it trained (median, p95, max). Writes benchmarks/results/lab.json.

Targets (issue 15): >= 97% validation accuracy in <= 30 s, an update at least once a second,
p95 prediction latency < 100 ms while training runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from scratchcnn.app import Classifier, default_model
from scratchcnn.app.server import make_server
from serve_bench import canvas_png

RESULTS = Path(__file__).parent / "results" / "lab.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="where MNIST is (default: the cache)")
    parser.add_argument("--images", type=int, default=59_000, help="training images (page default)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (page default)")
    parser.add_argument("--pace", type=float, default=0.15, help="seconds between predictions")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    server = make_server(Classifier.load(default_model()), "127.0.0.1", 0, data_dir=args.data_dir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = "127.0.0.1", server.server_address[1]
    origin = {"Origin": f"http://{host}:{port}", "Content-Type": "application/json"}

    def post(connection, path: str, body: dict) -> dict:
        connection.request("POST", path, body=json.dumps(body), headers=origin)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"{path}: {response.status} {data.decode()}")
        return json.loads(data)

    # Load the dataset once before timing, as the page's Data tab does before one trains.
    control = http.client.HTTPConnection(host, port, timeout=120)
    control.request("GET", "/api/data")
    control.getresponse().read()

    events: list[tuple[float, dict]] = []

    def listen() -> None:
        stream = http.client.HTTPConnection(host, port, timeout=120)
        stream.request("GET", "/api/train/events?since=0")
        response = stream.getresponse()
        for line in response:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                events.append((time.perf_counter(), event))
                if event["kind"] in ("done", "failed", "stopped"):
                    return

    started = time.perf_counter()
    post(control, "/api/train/start", {"recipe": "tiny", "images": args.images, "lr": args.lr})
    listener = threading.Thread(target=listen)
    listener.start()

    asker = http.client.HTTPConnection(host, port, timeout=30)
    bodies = [canvas_png(seed) for seed in range(20)]
    latencies = []
    while listener.is_alive():
        begin = time.perf_counter()
        asker.request(
            "POST", "/api/predict?activations=1", body=bodies[len(latencies) % 20],
            headers={"Content-Type": "image/png"},
        )  # fmt: skip
        response = asker.getresponse()
        response.read()
        assert response.status == 200
        latencies.append(time.perf_counter() - begin)
        time.sleep(max(0.0, args.pace - latencies[-1]))
    listener.join()
    server.shutdown()

    last = events[-1][1]
    if last["kind"] != "done":
        raise SystemExit(f"training ended {last['kind']}: {last}")
    updates = [t for t, e in events if e["kind"] in ("progress", "probe", "epoch")]
    gaps = np.diff([started, *updates])
    val = [e["val_accuracy"] for _, e in events if e["kind"] == "epoch"]
    ms = np.array(latencies) * 1000
    result = {
        "recipe": "tiny",
        "training_images": args.images,
        "lr": args.lr,
        "seconds_between_predictions": args.pace,
        "training_seconds": round(last["seconds"], 2),
        "wall_seconds_to_done": round(events[-1][0] - started, 2),
        "val_accuracy_by_epoch": val,
        "longest_gap_between_updates_s": round(float(gaps.max()), 3),
        "updates": len(updates),
        "predictions_while_training": len(latencies),
        "latency_ms": {
            "median": round(float(np.median(ms)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(float(ms.max()), 1),
        },
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
