"""No fault loses a good model or lets a small file eat the memory (#17).

One regression test per defect found by trying the command line as a careless user and an
attacker would (each failed on the code before its fix), then fuzz tests of the model-file
loader and of the command line's arguments.

The loader's stated bound, checked by the fuzz test: loading a model file takes under a second
and never holds more than 4x the arrays its declared architecture needs, plus the metadata
(at most ``MAX_META_BYTES``), whatever the file says about itself.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from scratchcnn import DivergenceError, ModelFileError, build
from scratchcnn.app import Classifier, load_arrays, save_arrays
from scratchcnn.app.cli import main
from scratchcnn.app.modelfile import MAX_META_BYTES, parameter_shapes
from scratchcnn.fileio import atomic_write
from scratchcnn.nn import SGD
from scratchcnn.training import Trainer

from helpers import one_clear_line, run
from layer_cases import NETS, make_net

# -- 1. divergence never replaces a good model ---------------------------------------------------


@pytest.fixture(scope="module")
def good_model(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("good") / "m.npz"
    args = ["--recipe", "seed", "--limit", "3000", "--data-dir", str(mnist_dir), "--quiet"]
    result = run("train", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("lr,epochs", [("1000", "1"), ("30", "3")])
def test_a_diverging_run_keeps_the_good_model_at_out(good_model, mnist_dir, tmp_path, lr, epochs):
    # Before: a finite-loss divergence saved a model with NaN batch-norm statistics over the
    # good one, exited 0, and left a checkpoint that could not be resumed.
    out = tmp_path / "m.npz"
    shutil.copy(good_model, out)
    before = out.read_bytes()
    args = ["--recipe", "fast", "--limit", "3000", "--epochs", epochs, "--lr", lr]
    result = run("train", *args, "--out", str(out), "--data-dir", str(mnist_dir), "--quiet")
    line = one_clear_line(result, "diverged", "--lr")
    assert out.read_bytes() == before
    assert run("info", str(out)).returncode == 0
    ckpt = tmp_path / "m.ckpt.npz"
    if ckpt.exists():  # "the last good checkpoint is kept": it must be one that loads
        assert "last good checkpoint" in line
        clf = Classifier.load(ckpt)
        assert all(np.isfinite(v).all() for v in clf.model.state_dict().values())


def test_a_huge_finite_loss_is_divergence():
    model = build("seed", seed=0)
    model.layers[-1].params["weight"] *= 1e8  # logits of order 1e8: a finite, absurd loss
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01), (images, labels), 1, 32, 0.1, 0.3)
    with pytest.raises(DivergenceError, match="batch 1"):
        trainer.run()


def test_non_finite_running_statistics_are_divergence_and_never_saved(tmp_path):
    clf = Classifier(build("fast", seed=0))
    norm = clf.model.layers[1]
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64)

    def poison(trainer, loss, correct, n):
        norm.buffers["running_var"][0] = np.inf

    with pytest.raises(DivergenceError, match="running_var"):
        clf.fit(images, labels, epochs=2, checkpoint=tmp_path / "c.npz", on_batch=poison)
    assert not (tmp_path / "c.npz").exists()  # no checkpoint of a broken model
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        clf.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


# -- 2. a small model file cannot make the reader decompress or allocate much ---------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "seed.npz"
    Classifier.create("seed", seed=0).save(path)
    return path


def rewrite(source: Path, target: Path, change) -> Path:
    """Copy a model file's members into ``target``, letting ``change(name, data)`` return new
    bytes (or None to drop the member); then add what ``change.extra`` lists."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = change(info.filename, old.read(info))
            if data is not None:
                new.writestr(info.filename, data)
        for name, data in getattr(change, "extra", []):
            new.writestr(name, data)
    return target


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue()


def measured_load(path: Path):
    """Load ``path``; return (the outcome, seconds, peak bytes allocated while loading)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        outcome = Classifier.load(path)
    except ModelFileError as err:
        outcome = err
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return outcome, seconds, peak


def test_an_unused_huge_entry_is_refused_before_it_is_decompressed(model_file, tmp_path):
    # Before: a 3 MB file with an unused 3 GB entry took 21 s and 2.97 GB to refuse. Here:
    # 600 MB of zeros, deflated to well under a megabyte.
    bomb = tmp_path / "bomb.npz"
    shutil.copy(model_file, bomb)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("param/9.extra.npy", "w", force_zip64=True) as member:
            member.write(npy_header((150_000_000,)))
            zeros = bytes(1 << 24)
            for _ in range(600_000_000 // len(zeros)):
                member.write(zeros)
    assert bomb.stat().st_size < 4_000_000
    outcome, seconds, peak = measured_load(bomb)
    assert isinstance(outcome, ModelFileError) and "unexpected entry" in str(outcome)
    assert seconds < 1 and peak < 16 << 20


def test_a_header_declaring_a_trillion_floats_is_refused_before_allocating(model_file, tmp_path):
    # Before: an entry whose .npy header declared 10^12 floats ended in a MemoryError traceback.
    def change(name, data):
        return npy_header((10**12,)) + data[-64:] if name == "param/0.weight.npy" else data

    outcome, seconds, peak = measured_load(rewrite(model_file, tmp_path / "big.npz", change))
    assert isinstance(outcome, ModelFileError) and "architecture needs" in str(outcome)
    assert seconds < 1 and peak < 16 << 20
    line = one_clear_line(run("info", str(tmp_path / "big.npz")), "big.npz")
    assert "MemoryError" not in line


def test_an_architecture_declaring_too_many_parameters_is_refused_before_building(
    model_file, tmp_path
):
    meta, arrays = load_arrays(model_file)
    meta["model"]["layers"][-1] = {"type": "Dense", "in_features": 10**6, "out_features": 10**5}
    huge = tmp_path / "huge.npz"
    save_arrays(huge, meta, arrays)
    outcome, seconds, peak = measured_load(huge)
    assert isinstance(outcome, ModelFileError) and "more than" in str(outcome)
    assert seconds < 1 and peak < 16 << 20


def test_parameter_shapes_from_the_layer_list_match_the_built_models():
    # The loader predicts every array from the layer list alone, without building anything.
    for name in NETS:
        model = make_net(name)
        expected = {key: value.shape for key, value in model.state_dict().items()}
        assert parameter_shapes(model.config()) == expected, name


# -- 3. malformed metadata, odd values -----------------------------------------------------------


def with_meta(model_file: Path, target: Path, edit) -> Path:
    meta, arrays = load_arrays(model_file)
    edit(meta)
    text = json.dumps(meta)
    blob = np.frombuffer(text.encode(), dtype=np.uint8)
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("__meta__.npy", npy_header(blob.shape, "|u1") + blob.tobytes())
        for key, value in arrays.items():
            out = io.BytesIO()
            np.save(out, value)
            archive.writestr(f"{key}.npy", out.getvalue())
    return target


META_DEFECTS = [
    ("training-not-an-object", lambda m: m.update(training="x"), "training"),
    ("seconds-a-string", lambda m: m["training"].update(seconds="slow"), "training.seconds"),
    ("history-of-numbers", lambda m: m.update(history=[1, 2]), "history"),
    ("history-field-text", lambda m: m.update(history=[{"epoch": "one"}]), "history"),
    ("std-zero", lambda m: m["normalization"].update(std=0), "std"),
    ("std-text", lambda m: m["normalization"].update(std="a"), "std"),
    ("version-a-string", lambda m: m.update(format_version="1"), "not a positive integer"),
    ("version-zero", lambda m: m.update(format_version=0), "not a positive integer"),
    ("metrics-text", lambda m: m["metrics"].update(test_accuracy="high"), "metrics"),
    ("architecture-number", lambda m: m.update(architecture=5), "architecture"),
    ("unknown-dataset", lambda m: m.update(dataset="cifar"), "dataset"),
    ("model-text", lambda m: m.update(model="abc"), "layer list"),
    ("layers-text", lambda m: m["model"].update(layers="x"), "layer list"),
    ("layer-unknown", lambda m: m["model"]["layers"].append({"type": "Lambda"}), "Lambda"),
    ("layer-negative", lambda m: m["model"]["layers"][0].update(out_channels=-8), "layer list"),
    ("layer-bool", lambda m: m["model"]["layers"][0].update(out_channels=True), "shape"),
]


@pytest.mark.parametrize(
    "edit,message", [d[1:] for d in META_DEFECTS], ids=[d[0] for d in META_DEFECTS]
)
def test_malformed_metadata_is_one_clear_error(model_file, tmp_path, edit, message):
    # Before: TypeError, AttributeError and ZeroDivisionError tracebacks; "1" was called newer.
    bad = with_meta(model_file, tmp_path / "bad.npz", edit)
    with pytest.raises(ModelFileError, match=message) as info:
        Classifier.load(bad)
    assert "newer" not in str(info.value)


def test_deeply_nested_metadata_is_one_clear_error(model_file, tmp_path):
    # Before: a RecursionError traceback.
    meta, arrays = load_arrays(model_file)
    text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    blob = np.frombuffer(text.encode(), dtype=np.uint8)
    path = tmp_path / "deep.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__meta__.npy", npy_header(blob.shape, "|u1") + blob.tobytes())
    one_clear_line(run("info", str(path)), "corrupt model metadata")


def test_complex_weights_are_refused_not_cast(model_file, tmp_path):
    def change(name, data):
        if name != "param/0.bias.npy":
            return data
        out = io.BytesIO()
        np.save(out, np.zeros(8, np.complex64))
        return out.getvalue()

    with pytest.raises(ModelFileError, match="complex64"):
        Classifier.load(rewrite(model_file, tmp_path / "complex.npz", change))


def test_weights_that_overflow_give_an_error_never_nan(model_file, tmp_path):
    # Before: huge finite weights gave NaN probabilities, exit 0, and --json printed NaN.
    clf = Classifier.load(model_file)
    clf.model.layers[-1].params["weight"][...] = 3e38
    clf.model.layers[0].params["weight"][...] = 3e38
    path = tmp_path / "overflow.npz"
    clf.save(path)  # finite: it saves
    image = tmp_path / "seven.png"
    Image.fromarray(np.kron(np.eye(4, dtype=np.uint8) * 255, np.ones((8, 8), np.uint8))).save(image)
    for extra in ([], ["--json"]):
        result = run("predict", str(path), str(image), *extra)
        one_clear_line(result, "overflow")
        assert "NaN" not in result.stdout


# -- 4. command-line arguments and paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "args,needles",
    [
        (["predict", "m.npz", "x.png", "--top", "0"], ["--top", "from 1"]),
        (["train", "--batch-size", "0"], ["--batch-size", "from 1"]),
        (["serve", "m.npz", "--port", "99999"], ["--port", "0 to 65535"]),
        (["serve", "m.npz", "--port", "-1"], ["--port"]),
        (["train", "--lr", "nan"], ["--lr", "finite"]),
        (["train", "--momentum", "1"], ["--momentum", "below 1"]),
    ],
)
def test_out_of_range_arguments_are_one_line(args, needles):
    one_clear_line(run(*args), "scratchcnn: error:", *needles)


def test_a_bad_out_is_refused_before_training(tmp_path):
    # Before: a folder, a read-only folder or a parent that is a file surfaced only after the
    # first epoch or the whole run. The data folder here does not exist: a run that got as
    # far as loading data would say so instead.
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [(tmp_path, "is a folder"), (a_file / "m.npz", "is a file, not a folder")]
    if os.geteuid() != 0:  # root writes anywhere: the read-only case needs another user
        cases.append((locked / "m.npz", "not writable"))
    for out, message in cases:
        start = time.perf_counter()
        result = run("train", "--out", str(out), "--data-dir", str(tmp_path / "no-data"))
        one_clear_line(result, message)
        assert time.perf_counter() - start < 20


def test_a_folder_and_a_thin_image_are_named_for_what_they_are(model_file, tmp_path):
    thin = tmp_path / "thin.png"
    Image.fromarray(np.full((40, 10000), 255, np.uint8)).save(thin)
    one_clear_line(run("predict", str(model_file), str(tmp_path)), "is a folder")
    one_clear_line(run("predict", str(model_file), str(thin)), "10000x40", "too thin")


def test_a_writer_killed_mid_write_leaves_nothing_the_next_write_does_not_remove(tmp_path):
    # Before: SIGKILL during a checkpoint write left a hidden .part file forever.
    target = tmp_path / "run.ckpt.npz"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from scratchcnn.fileio import atomic_write\n"
            "def slow(out):\n"
            "    out.write(b'half a checkpoint'); out.flush(); print('writing', flush=True)\n"
            "    time.sleep(60)\n"
            f"atomic_write({str(target)!r}, slow)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert len(list(tmp_path.glob(".run.ckpt.npz.*.part"))) == 1 and not target.exists()
    atomic_write(target, lambda out: out.write(b"a whole checkpoint"))
    assert target.read_bytes() == b"a whole checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt.npz"]


def test_a_write_in_progress_is_not_mistaken_for_a_leftover(tmp_path):
    target = tmp_path / "model.npz"
    busy = tmp_path / f".model.npz.{os.getpid()}.abc.part"  # this process is alive
    busy.write_bytes(b"x")
    atomic_write(target, lambda out: out.write(b"y"))
    assert busy.exists()


# -- fuzz: the model-file loader ---------------------------------------------------------------

DESCRS = ["<f4", "<f8", ">f4", "<c8", "|O", "|u1", "<i8", "|V8", "<U3", "|b1"]
NAMES = ["param/0.weight", "param/0.bias", "param/4.weight", "optim/steps", "param/x", "__meta__"]


def fuzz_bound(model_file: Path) -> int:
    declared = sum(v.nbytes for v in Classifier.load(model_file).model.state_dict().values())
    return 4 * declared + MAX_META_BYTES


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**7)),
)
def test_fuzz_mutated_model_files(model_file, tmp_path, edits, cut):
    data = bytearray(model_file.read_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / "mutated.npz"
    path.write_bytes(bytes(data))
    outcome, seconds, peak = measured_load(path)
    assert isinstance(outcome, (Classifier, ModelFileError)), outcome
    assert seconds < 1 and peak < fuzz_bound(model_file)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(NAMES),
    descr=st.sampled_from(DESCRS),
    shape=st.lists(st.integers(0, 10**13), max_size=4).map(tuple),
    payload=st.binary(max_size=256),
    fortran=st.booleans(),
)
def test_fuzz_crafted_npy_members(model_file, tmp_path, name, descr, shape, payload, fortran):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": descr, "fortran_order": fortran, "shape": shape}
    )
    member = out.getvalue() + payload

    def change(member_name, data):
        return member if member_name == f"{name}.npy" else data

    replaces = name in ("param/0.weight", "param/0.bias", "param/4.weight", "__meta__")
    change.extra = [] if replaces else [(f"{name}.npy", member)]
    path = rewrite(model_file, tmp_path / "crafted.npz", change)
    outcome, seconds, peak = measured_load(path)
    assert isinstance(outcome, (Classifier, ModelFileError)), outcome
    assert seconds < 1 and peak < fuzz_bound(model_file)


# -- fuzz: the command line's arguments -------------------------------------------------------

# Every option that takes a value, with values it must refuse, and the subcommand's other
# arguments (a model file that does not exist is refused too, as one line).
# Values no option of that kind accepts (each option also gets its own out-of-range ones).
BAD_NUMBERS = ["", "abc", "1.5x", "0x10", "nan", "inf", "-inf", "1e999"]
BAD_INTS = ["-1", "1.5", "1e3", *BAD_NUMBERS]
OPTIONS = {
    "train": {
        "--epochs": ["0", "10001", "99999999999999999999", *BAD_INTS],
        "--batch-size": ["0", "100001", *BAD_INTS],
        "--lr": ["0", "-1", *BAD_NUMBERS],
        "--momentum": ["1", "1.5", "-1", *BAD_NUMBERS],
        "--weight-decay": ["-1", *BAD_NUMBERS],
        "--seed": ["99999999999999999999", *BAD_INTS],
        "--val": BAD_INTS,
        "--limit": ["0", *BAD_INTS],
        "--recipe": ["", "huge"],
        "--arch": ["", "resnet"],
        "--optimizer": ["", "lbfgs"],
        "--schedule": ["", "zigzag"],
        "--dataset": ["", "cifar"],
    },
    "predict": {"--top": ["0", "1001", *BAD_INTS]},
    "evaluate": {"--limit": ["0", *BAD_INTS], "--dataset": ["", "cifar"]},
    "plot": {"--index": BAD_INTS, "--limit": ["0", *BAD_INTS]},
    "serve": {"--port": ["65536", *BAD_INTS]},
}
POSITIONALS = {
    "train": [],
    "predict": ["m.npz", "x.png"],
    "evaluate": ["m.npz"],
    "plot": ["m.npz"],
    "serve": ["m.npz"],
    "info": ["m.npz"],
}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_command_line_arguments(data, capsys):  # capsys is read (and reset) every run
    command = data.draw(st.sampled_from(sorted(OPTIONS)))
    option = data.draw(st.sampled_from(sorted(OPTIONS[command])))
    value = data.draw(st.sampled_from(OPTIONS[command][option]))
    argv = [command, *POSITIONALS[command], f"{option}={value}"]
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), argv
    assert len(lines) == 1 and lines[0].startswith("scratchcnn: error:"), (argv, err)


def test_every_subcommand_refuses_a_missing_or_wrong_model_file(tmp_path, capsys):
    text = tmp_path / "notes.npz"
    text.write_text("not a model")
    for command, positionals in POSITIONALS.items():
        if not positionals:
            continue
        for model in (str(tmp_path / "missing.npz"), str(tmp_path), str(text)):
            code = main([command, model, *positionals[1:]])
            lines = capsys.readouterr().err.strip().splitlines()
            if command == "predict" and model == str(tmp_path):
                # predict's model is optional and a model file ends in .npz: a folder is one
                # more picture to read, refused on its own line beside the missing x.png
                assert code != 0 and lines == [
                    f"scratchcnn: error: {tmp_path}: is a folder, not an image file",
                    "scratchcnn: error: x.png: no such image file",
                ]
                continue
            assert code != 0 and len(lines) == 1 and lines[0].startswith("scratchcnn: error:")
