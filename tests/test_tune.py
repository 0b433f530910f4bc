"""Fine-tuning on a user's own handwriting (``scratchcnn.app.finetune``, ``scratchcnn tune``):
the folder is read as ``predict`` reads photos, bad folders and files get one clear error, a
share of the user's images is held out, and a model that misreads a user's style learns it
without forgetting the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from photogen import digit_photo
from scratchcnn.app import Classifier, default_model
from scratchcnn.app.finetune import LabelledImages, fine_tune, hold_out, read_folder
from scratchcnn.app.photos import find_digit
from scratchcnn.data import load
from scratchcnn.errors import ScratchCNNError

from helpers import one_clear_line, run

DIGITS = [str(d) for d in range(10)]


def readable_photo(digit: np.ndarray, seed: int) -> bytes:
    """A photogen photo of ``digit`` in which the pipeline finds a digit (a few of its papers
    defeat it: tests/test_photos.py measures how many)."""
    for attempt in range(seed, seed + 20):
        photo = digit_photo(digit, seed=attempt)
        try:
            find_digit(photo)
        except ScratchCNNError:
            continue
        return photo
    raise AssertionError("no readable photo in 20 seeds")


def photo_folder(root: Path, mnist_dir: Path, per_class: dict[str, int]) -> Path:
    """``root/<class>/<i>.png``: photos (photogen) of MNIST test digits of each class."""
    images, labels = load("mnist", "test", mnist_dir)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == int(name))[:count]):
            (root / name / f"{i}.png").write_bytes(readable_photo(images[index], int(index)))
    return root


def test_hold_out_keeps_a_share_of_each_class_and_never_its_last_image():
    labels = np.array([0] * 8 + [1] * 2 + [2] * 1)
    train, held = hold_out(labels, 0.25, seed=3)
    assert sorted([*train, *held]) == list(range(len(labels)))
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(labels[train], minlength=3).tolist() == [6, 1, 1]
    assert len(hold_out(labels, 0.0)[1]) == 0
    with pytest.raises(ScratchCNNError, match="in \\[0, 1\\)"):
        hold_out(labels, 1.0)


def test_read_folder_reads_photos_by_class_name_or_index(tmp_path, mnist_dir):
    folder = photo_folder(tmp_path / "mine", mnist_dir, {"3": 2, "7": 1})
    (folder / ".cache").mkdir()  # hidden entries are not classes
    mine = read_folder(folder, DIGITS)
    assert mine.images.shape == (3, 28, 28) and mine.images.dtype == np.uint8
    assert mine.labels.tolist() == [3, 3, 7]
    assert [p.name for p in mine.paths] == ["0.png", "1.png", "0.png"]
    clothes = ["T-shirt/top", "Trouser"]
    (folder / "3").rename(folder / "1")  # an index names a class whose name has a slash
    (folder / "7").rename(folder / "0")
    assert read_folder(folder, clothes).labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda f: None, "is not a folder"),
        (lambda f: f.mkdir(), "has no class subfolders"),
        (lambda f: (f / "seven").mkdir(parents=True), "not a class of this model"),
        (lambda f: (f.mkdir(), (f / "a.png").write_bytes(b"x")), "subfolder of its class"),
        (lambda f: (f / "7").mkdir(parents=True), "no images"),
        (
            lambda f: ((f / "7").mkdir(parents=True), (f / "7" / "note.txt").write_text("hi")),
            "1 file(s) could not be read: ",
        ),
    ],
)
def test_read_folder_gives_one_clear_error(tmp_path, make, message):
    folder = tmp_path / "mine"
    make(folder)
    with pytest.raises(ScratchCNNError, match=message.replace("(", "\\(").replace(")", "\\)")):
        read_folder(folder, DIGITS)


def test_bad_files_are_all_named_and_nothing_is_left_out_silently(tmp_path):
    folder = tmp_path / "mine"
    (folder / "1").mkdir(parents=True)
    for i in range(7):
        (folder / "1" / f"bad{i}.png").write_bytes(b"not an image")
    with pytest.raises(ScratchCNNError, match="7 file\\(s\\) could not be read: .*bad0.png.*"
                       "\\(and 2 more\\)"):  # fmt: skip
        read_folder(folder, DIGITS)


def test_fine_tuning_learns_a_users_style_without_forgetting_the_dataset(mnist_dir):
    """The user writes mirrored 2s, 3s, 4s and 7s: the bundled model misreads most of them.
    After tuning on 15 of each it reads the 5 of each it never saw, and MNIST's own
    validation images stay within a point of where they were."""
    test_x, test_y = load("mnist", "test", mnist_dir)
    train_x, train_y = load("mnist", "train", mnist_dir)
    idx = np.concatenate([np.flatnonzero(test_y == d)[:20] for d in (2, 3, 4, 7)])
    mine = LabelledImages(test_x[idx][:, :, ::-1].copy(), test_y[idx].astype(np.int64),
                          [Path(f"{i}.png") for i in idx])  # fmt: skip
    clf = Classifier.load(default_model())
    old_weights = {k: v.copy() for k, v in clf.model.state_dict().items()}
    report = fine_tune(clf, mine, (train_x[:12000], train_y[:12000]), epochs=3,
                       base_samples=2000, seed=0)  # fmt: skip
    assert (report["trained_on"], report["held_out"]) == (60, 20)
    assert report["validation_images"] == 1200
    before, after = report["before"], report["after"]
    assert before["held_out"] <= 0.6, before  # the style is foreign to it
    assert after["held_out"] >= before["held_out"] + 0.3, report
    assert after["validation"] >= before["validation"] - 0.01, report
    # It trained: the weights moved, and the file's record says from what and on what.
    assert any(not np.array_equal(v, old_weights[k]) for k, v in clf.model.state_dict().items())
    assert clf.training["data"]["fine_tuned_from"]["architecture"] == "photo"
    assert clf.training["fine_tune"] == report
    assert "test_accuracy" not in clf.metrics  # the old model's figure is not the new one's
    # The bundled model itself is untouched.
    bundled = Classifier.load(default_model()).model.state_dict()
    assert bundled.keys() == old_weights.keys()
    for k, v in bundled.items():
        assert np.array_equal(v, old_weights[k])


def test_tune_command_writes_a_new_model_and_reports_before_and_after(tmp_path, mnist_dir):
    folder = photo_folder(tmp_path / "mine", mnist_dir, {"1": 3, "4": 3})
    base = tmp_path / "base.npz"
    Classifier.create("quick", seed=0).save(base)
    out = tmp_path / "tuned.npz"
    args = ("tune", str(folder), "--model", str(base), "--data-dir", str(mnist_dir))
    result = run(*args, "--out", str(out), "--epochs", "1", "--mix", "500", "--quiet")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "Your images: 6 in" in text and "(1: 3, 4: 3)" in text
    assert "Your 2 held-out images (not trained on):" in text
    assert "Trained on 4 of your images" in text and "500 mnist images" in text
    assert "mnist validation (5,000 images):" in text and "test set after:" in text
    tuned = Classifier.load(out)
    assert tuned.training["fine_tune"]["held_out"] == 2
    assert 0 <= tuned.metrics["test_accuracy"] <= 1
    info = run("info", str(out))
    assert info.returncode == 0 and "Tuned:" in info.stdout, info.stdout


def test_tune_never_writes_over_the_model_it_starts_from(tmp_path, mnist_dir):
    folder = photo_folder(tmp_path / "mine", mnist_dir, {"1": 1})
    base = tmp_path / "base.npz"
    Classifier.create("quick", seed=0).save(base)
    before = base.read_bytes()
    result = run("tune", str(folder), "--model", str(base), "--out", str(base))
    one_clear_line(result, "is the model being tuned")
    assert base.read_bytes() == before


def test_tune_command_names_a_bad_folder_in_one_line(tmp_path):
    result = run("tune", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t.npz"))
    one_clear_line(result, "nowhere is not a folder")
    assert not (tmp_path / "t.npz").exists()
