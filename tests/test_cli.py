"""End to end: the real ``scratchcnn`` command in a subprocess, on slices of the real MNIST."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchcnn import build
from scratchcnn.app import Classifier, load_arrays, save_arrays
from scratchcnn.data import load

from helpers import cli_env, one_clear_line, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mnist_dir) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(workdir, mnist_dir) -> Path:
    """A seed net trained for 2 epochs on the first 12,000 training images."""
    out = workdir / "seed.npz"
    result = run(
        "train",
        "--recipe",
        "seed",
        "--data-dir",
        str(mnist_dir),
        "--limit",
        "12000",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout and "Conv2D(1, 8, 3)" in result.stdout
    accuracy = float(result.stdout.split("Test accuracy: ")[1].split("%")[0])
    assert accuracy > 93.0, result.stdout
    return out


def test_train_writes_model_and_history_and_reports_test_accuracy(model):
    meta, arrays = load_arrays(model)
    assert meta["architecture"] == "seed" and meta["dataset"] == "mnist"
    assert meta["metrics"]["test_accuracy"] > 0.93
    assert meta["training"]["train_samples"] == 12000 - 1200
    assert set(arrays) == {"param/0.weight", "param/0.bias", "param/4.weight", "param/4.bias"}
    history = json.loads(model.with_name("seed.history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0.8 < h["val_accuracy"] <= 1 for h in history)
    assert not model.with_name("seed.ckpt.npz").exists()  # removed once training finished


def test_train_plain_runs_the_engine_a_learner_reads(workdir, mnist_dir, model):
    # --plain: every layer as its file in scratchcnn/nn reads. Same recipe, data and seed:
    # the same training but for float32 rounding, which 675 steps grow to ~1% in the weights.
    out = workdir / "plain.npz"
    args = ["--recipe", "seed", "--data-dir", str(mnist_dir), "--limit", "12000", "--epochs", "2"]
    result = run("train", *args, "--out", str(out), "--quiet", "--plain")
    assert result.returncode == 0, result.stderr
    plain_meta, plain_arrays = load_arrays(out)
    fast_meta, fast_arrays = load_arrays(model)
    assert plain_meta["training"]["engine"] == "plain" and fast_meta["training"]["engine"] == "fast"
    for key, value in fast_arrays.items():
        assert np.abs(plain_arrays[key] - value).max() < 0.05 * np.abs(value).max(), key
    plain_accuracy = plain_meta["metrics"]["test_accuracy"]
    assert abs(plain_accuracy - fast_meta["metrics"]["test_accuracy"]) < 0.005


def test_evaluate(model, mnist_dir):
    result = run("evaluate", str(model), "--data-dir", str(mnist_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10000
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 10000)
    assert report["accuracy"] == pytest.approx(load_arrays(model)[0]["metrics"]["test_accuracy"])
    text = run("evaluate", str(model), "--data-dir", str(mnist_dir))
    assert f"Accuracy: {100 * report['accuracy']:.2f}%" in text.stdout
    assert "Confusion matrix" in text.stdout and "precision" in text.stdout


STYLES = ["large", "off-centre", "inverted", "rgb", "jpeg"]


def styled(image: np.ndarray, style: str, path: Path) -> Path:
    """An MNIST test digit made to look like a photo or scan in one of several styles."""
    ink = Image.fromarray(image)
    if style == "large":  # big, dark ink on white paper
        big = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (400, 360), 255)
        canvas.paste(big, (60, 40))
        ink = canvas
    elif style == "off-centre":  # small, in a corner of a large dark frame
        canvas = Image.new("L", (200, 150), 0)
        canvas.paste(ink.resize((56, 56)), (120, 10))
        ink = canvas
    elif style == "inverted":  # black ink on light grey paper
        ink = Image.fromarray(np.uint8(230 - image * (200 / 255)))
    elif style == "rgb":  # blue ink on cream paper, colour file
        rgb = np.stack([250 - image * 0.9, 245 - image * 0.8, 225 - image * 0.3], axis=-1)
        ink = Image.fromarray(np.uint8(rgb)).resize((112, 112))
    path = path.with_suffix(".jpg" if style == "jpeg" else ".png")
    if style == "jpeg":  # dark on white, lossy
        Image.fromarray(255 - image).resize((140, 140)).convert("RGB").save(path, quality=70)
    else:
        ink.save(path)
    return path


def test_predict_on_photos_in_several_styles(model, mnist_dir, tmp_path):
    images, labels = load("mnist", "test", mnist_dir)
    files, truth = [], []
    for i in range(12):
        for style in STYLES:
            files.append(str(styled(images[i], style, tmp_path / f"{i}-{style}")))
            truth.append(str(labels[i]))
    result = run("predict", str(model), *files, "--json")
    answers = json.loads(result.stdout)["images"]
    # exit status 3: every image was read, and some reading is under the calibrated threshold
    assert result.returncode == (3 if any(a["unsure"] for a in answers) else 0), result.stderr
    assert [a["image"] for a in answers] == files
    for answer in answers:
        probs = [t["probability"] for t in answer["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert answer["best_guess"] == answer["top"][0]["class"]
        assert answer["prediction"] == (None if answer["unsure"] else answer["best_guess"])
    hits = [a["best_guess"] == t for a, t in zip(answers, truth, strict=True)]
    by_style = {
        s: sum(hits[k] for k in range(len(hits)) if k % 5 == j) for j, s in enumerate(STYLES)
    }
    assert sum(hits) >= 0.85 * len(hits), by_style
    assert min(by_style.values()) >= 9, by_style  # every style mostly right (of 12)
    text = run("predict", str(model), files[0]).stdout.splitlines()
    assert text[0].startswith(f"Model: {model}: seed on mnist")  # which model answers
    assert text[1].startswith(f"{files[0]}: ") and answers[0]["best_guess"] in text[1]


def test_plot_writes_real_pngs(model, mnist_dir, tmp_path):
    result = run("plot", str(model), "--data-dir", str(mnist_dir), "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = {"training_curves", "confusion_matrix", "filters", "feature_maps", "mistakes"}
    assert {Path(line).stem for line in result.stdout.split()} == names
    for name in names:
        with Image.open(tmp_path / f"{name}.png") as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 150
            assert np.asarray(img.convert("L")).std() > 5  # not a blank canvas


def test_info(model):
    result = run("info", str(model))
    assert result.returncode == 0
    assert "Architecture: seed  (13,610 parameters)" in result.stdout
    assert "Dataset:      mnist" in result.stdout
    info = json.loads(run("info", str(model), "--json").stdout)
    assert info["training"]["recipe"]["epochs"] == 2 and info["num_parameters"] == 13610


# -- bad input: one clear line, non-zero exit, never a traceback ---------------------------------


def test_missing_model(tmp_path):
    one_clear_line(run("info", str(tmp_path / "none.npz")), "no such model file")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_corrupt_model(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    one_clear_line(run("evaluate", str(path)), "bad.npz", "not a readable scratchcnn model file")


def test_truncated_model(model, tmp_path):
    path = tmp_path / "cut.npz"
    path.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    one_clear_line(run("predict", str(path), "x.png"), "cut.npz")


def test_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.zeros(3))
    one_clear_line(run("info", str(path)), "not a scratchcnn model file")


def test_pickled_npz_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, __meta__=np.array([{"evil": 1}], dtype=object))
    one_clear_line(run("info", str(path)), "pickled.npz")


def test_newer_format_and_mismatched_arrays(model, tmp_path):
    meta, arrays = load_arrays(model)
    newer = tmp_path / "newer.npz"
    doc = json.dumps(dict(meta, format_version=99)).encode()
    np.savez(newer, __meta__=np.frombuffer(doc, dtype=np.uint8), **arrays)
    one_clear_line(run("info", str(newer)), "newer", "upgrade")
    wrong = tmp_path / "wrong.npz"
    save_arrays(wrong, dict(meta, model=build("keras").config()), arrays)
    one_clear_line(run("info", str(wrong)), "the architecture needs")


def test_a_format_1_model_file_still_loads():
    # docs/results/fast-mnist.npz was written before model files held their layer list: it
    # names its architecture instead.
    old = REPO / "docs" / "results" / "fast-mnist.npz"
    meta, _ = load_arrays(old)
    assert meta["format_version"] == 1 and "model" not in meta
    clf = Classifier.load(old)
    assert clf.architecture == "fast" and clf.model.num_parameters() == 35_018
    result = run("info", str(old))
    assert result.returncode == 0 and "Architecture: fast" in result.stdout


def test_bad_images(model, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is a text file, not a picture\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1), 255).save(tiny)
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    cases = [
        (text, "not a readable image"),
        (empty, "empty"),
        (tiny, "1x1"),
        (blank, "no digit found"),
        (tmp_path / "missing.png", "no such image"),
    ]
    for path, needle in cases:
        one_clear_line(run("predict", str(model), str(path)), str(path), needle)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header says width x height: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [9000, 100_000])  # just over our limit; far over Pillow's
def test_an_image_bomb_is_refused_before_it_is_decoded(model, tmp_path, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(side, side))
    for command in ("predict", "read"):
        one_clear_line(run(command, str(bomb), "--model", str(model)), str(bomb), "too large")


def test_wrong_arch_and_options():
    one_clear_line(run("train", "--arch", "resnet"), "invalid choice", "resnet")
    one_clear_line(run("train", "--epochs", "many"), "--epochs", "expected a whole number")


def test_model_from_another_dataset(tmp_path, mnist_dir):
    path = tmp_path / "fashion.npz"
    Classifier.create("seed", dataset="fashion-mnist").save(path)
    one_clear_line(
        run("evaluate", str(path), "--dataset", "mnist", "--data-dir", str(mnist_dir)),
        "trained on fashion-mnist, not mnist",
    )


def test_missing_data_names_what_to_do(tmp_path):
    result = run(
        "train", "--data-dir", str(tmp_path), env_extra={"XDG_CACHE_HOME": str(tmp_path / "c")}
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "could not download train-images-idx3-ubyte.gz" in result.stderr
    assert "--data-dir" in result.stderr


def test_divergence_stops_with_advice(mnist_dir, tmp_path):
    out = tmp_path / "boom.npz"
    result = run(
        "train",
        "--data-dir",
        str(mnist_dir),
        "--limit",
        "2000",
        "--lr",
        "1e6",
        "--out",
        str(out),
        "--quiet",
    )
    line = one_clear_line(result, "diverged", "lower learning rate")
    assert "--lr" in line and not out.exists()


# -- interrupt and resume ------------------------------------------------------------------------


TRAIN = [
    "train",
    "--arch",
    "keras",
    "--limit",
    "4000",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--lr",
    "0.02",
    "--quiet",
]


@pytest.fixture(scope="module")
def reference(workdir, mnist_dir) -> dict[str, np.ndarray]:
    out = workdir / "reference.npz"
    result = run(*TRAIN, "--data-dir", str(mnist_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return load_arrays(out)[1]


def assert_same_weights(path: Path, reference: dict[str, np.ndarray]) -> None:
    _, arrays = load_arrays(path)
    assert set(arrays) == set(reference)
    for key in reference:
        np.testing.assert_array_equal(arrays[key], reference[key], err_msg=key)


def start_training(mnist_dir: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "scratchcnn", *TRAIN, "--data-dir", str(mnist_dir)]
    return subprocess.Popen(
        [*command, "--out", str(out)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, process, limit: float = 240) -> None:
    deadline = time.time() + limit
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "training did not get there in time"
        time.sleep(0.05)


def test_killed_after_an_epoch_then_resumed_matches_an_uninterrupted_run(
    reference, mnist_dir, tmp_path
):
    out = tmp_path / "killed.npz"
    ckpt = tmp_path / "killed.ckpt.npz"
    proc = start_training(mnist_dir, out)
    wait_for(ckpt.exists, proc)
    proc.kill()  # SIGKILL: no chance to clean up; the atomic checkpoint must still be whole
    proc.communicate()
    assert load_arrays(ckpt)[0]["checkpoint"]["trainer"]["epoch"] >= 1
    result = run("train", "--resume", "--out", str(out), "--data-dir", str(mnist_dir), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout
    assert_same_weights(out, reference)


def test_ctrl_c_saves_a_checkpoint_mid_epoch_then_resume_matches(reference, mnist_dir, tmp_path):
    out = tmp_path / "stopped.npz"
    proc = start_training(mnist_dir, out)
    first_epoch = proc.stdout.readline()
    while not first_epoch.startswith("epoch 1/3"):
        assert first_epoch, proc.communicate()
        first_epoch = proc.stdout.readline()
    # A third of the first epoch's time into the second ("... 9,954 img/s  0.4 s"): a fixed
    # half second outlasted the whole second epoch on a fast machine (stopped in the third)
    time.sleep(float(first_epoch.split()[-2]) / 3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    state = load_arrays(tmp_path / "stopped.ckpt.npz")[0]["checkpoint"]["trainer"]
    assert state["epoch"] == 1 and state["batch"] > 0  # stopped inside the second epoch
    result = run("train", "--resume", "--out", str(out), "--data-dir", str(mnist_dir), "--quiet")
    assert result.returncode == 0, result.stderr
    assert_same_weights(out, reference)


def test_bench_prints_and_saves_every_figure(tmp_path, torch):
    # A short run: the figures themselves are machine noise; what is checked is that every
    # row has our rates, PyTorch's and their ratios, and a GEMM peak share within reason.
    out = tmp_path / "bench.json"
    args = ["--arch", "seed", "keras", "--batch", "64", "--repeats", "1", "--seconds", "0.05"]
    result = run("bench", *args, "--no-epochs", "--no-memory", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "GEMM peak" in result.stdout and "%peak" in result.stdout
    report = json.loads(out.read_text())
    assert report["gemm_peak_gflops"] > 0 and report["torch"].startswith("2.13")
    # kernels forced by the environment (some machines set OPENBLAS_CORETYPE) are said so
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    assert report["blas"].get("coretype_set") == coretype
    assert (f"OPENBLAS_CORETYPE={coretype} chose them" in result.stdout) == bool(coretype)
    assert [(row["arch"], row["batch"]) for row in report["rows"]] == [("seed", 64), ("keras", 64)]
    for row in report["rows"]:
        assert row["ours_train"] > 0 and row["torch_train"] > 0 and row["ours_infer"] > 0
        assert row["train_ratio"] == pytest.approx(row["ours_train"] / row["torch_train"])
        assert 0 < row["percent_of_peak"] < 100 and 0 < row["percent_of_start_peak"] < 100
        # every round's figures, of which the row's are the medians
        assert row["rounds"]["ours_train"] == [row["ours_train"]]
        assert row["rounds"]["percent_of_peak"] == [pytest.approx(row["percent_of_peak"])]
        # the printed ratio is cut to two places, never rounded up to a target it misses
        start = f"{row['arch']:<6}    64"
        line = next(x for x in result.stdout.splitlines() if x.startswith(start))
        assert f" {math.floor(row['train_ratio'] * 100) / 100:.2f} " in line
    if "inference" in report:  # with ONNX Runtime: the nets trained, and the default's net
        rows = [(row["arch"], row["batch"]) for row in report["inference"]]
        assert rows == [(arch, b) for arch in ("seed", "keras", "fast") for b in (1, 1000)]
        assert all(row["ratio_ort"] == row["ours"] / row["ort_ours"] for row in report["inference"])


def test_bench_counts_the_flops_the_compiled_path_executes(monkeypatch):
    # %peak is over the FLOPs executed: keras's second conv makes 10x10 of its 11x11 outputs
    # per channel, and its gradients come from Winograd's products and transforms
    from scratchcnn.app.bench import make_model, training_flops
    from scratchcnn.fast import winograd

    model = make_model("keras")
    conv1, dense = 26 * 26 * 9 * 1 * 32, 1600 * 10  # multiply-adds of a forward pass
    conv2, conv2_all = 100 * 9 * 32 * 64, 121 * 9 * 32 * 64
    tiles = 25  # 2x2 pool windows: V, dM and dU; then dV and dd
    conv2_grads = tiles * 16 * (16 * 32 + 4 * 64 + 32 * 64) + tiles * 16 * (64 * 32 + 16 * 32)
    assert training_flops(model) == 2 * (2 * conv1 + conv2 + conv2_grads + 3 * dense)
    assert training_flops(model, executed=False) == 2 * (2 * conv1 + 3 * conv2_all + 3 * dense)
    monkeypatch.setattr(winograd, "ENABLED", False)
    assert training_flops(model) == 2 * (2 * conv1 + 3 * conv2 + 3 * dense)


def test_every_option_and_positional_of_every_subcommand_says_what_it_is_and_its_default():
    import argparse

    from scratchcnn.app.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"train", "predict", "read", "tune", "serve", "export"} <= set(commands.choices)
    for name, sub in commands.choices.items():
        help_text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = action.option_strings or [action.dest]
            assert action.help and action.help.strip(), f"{name} {label[0]} has no description"
            shown = action.default not in (None, False, argparse.SUPPRESS)
            if shown and "%(default)" not in action.help:
                assert f"(default: {action.default})" in " ".join(help_text.split()), (
                    f"{name} {label[0]}: its default {action.default!r} is not shown"
                )


def test_plain_training_and_evaluate_set_malloc_to_keep_freed_memory(monkeypatch, tmp_path):
    """``train --plain`` and ``evaluate`` set the allocator for the process
    (``keep_freed_memory``) before they run: the plain engine makes every array afresh, and
    evaluate's chunks of 1000 images get new inference memory each. Compiled training, which
    reuses its own memory, and the commands that read, predict or serve a few images at a time
    leave it as it was."""
    from scratchcnn.app import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    out = str(tmp_path / "model.npz")
    assert cli.main(["train", "--resume", "--out", out]) != 0  # nothing to resume: fails early
    assert cli.main(["tune", str(tmp_path / "no-such-folder"), "--out", out]) != 0
    assert cli.main(["info", str(tmp_path / "missing.npz")]) != 0
    assert calls == []
    assert cli.main(["train", "--plain", "--resume", "--out", out]) != 0
    assert calls == [True]
    assert cli.main(["evaluate", str(tmp_path / "missing.npz")]) != 0
    assert calls == [True, True]
