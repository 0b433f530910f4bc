"""The ``scratchcnn`` command: a thin shell over :class:`scratchcnn.classifier.Classifier`.

Every failure the user can cause (missing or corrupt files, bad images, wrong options, a
diverging run) ends in one ``scratchcnn: error: ...`` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import __version__
from ..data import DATASETS
from ..errors import DivergenceError, ModelFileError, ScratchCNNError
from ..fileio import atomic_write
from . import (
    ARCHITECTURES,
    OPTIMIZERS,
    POLICIES,
    RECIPES,
    SCHEDULES,
    Recipe,
    get_recipe,
    keep_freed_memory,
    read_checkpoint,
)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help line ends with its default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``scratchcnn: error:`` line, like every other
    error, and every help line shows its default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        self.exit(2, f"scratchcnn: error: {message} (see {self.prog} --help)\n")


def integer(low: int, high: int | None = None):
    """An argparse type: an int in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    return parse


def number(low: float, high: float | None = None, open_low: bool = False):
    """An argparse type: a finite float above ``low`` (or at least ``low``) and below ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if open_low else value < low
        if not math.isfinite(value) or too_low or (high is not None and value >= high):
            bound = f"above {low:g}" if open_low else f"at least {low:g}"
            span = bound + ("" if high is None else f" and below {high:g}")
            raise argparse.ArgumentTypeError(f"must be a finite number {span}, got {text}")
        return value

    return parse


def fail(message: str, code: int = 1) -> int:
    print(f"scratchcnn: error: {message}", file=sys.stderr)
    return code


# -- helpers -------------------------------------------------------------------------------------


def checkpoint_path(out: Path) -> Path:
    return out.parent / f"{out.stem}.ckpt.npz"


def history_path(out: Path) -> Path:
    return out.parent / f"{out.stem}.history.json"


def download_progress():
    """A tqdm bar for downloads, created on the first chunk of each file."""
    from tqdm import tqdm

    state: dict = {}

    def update(done: int, total: int | None) -> None:
        bar = state.get("bar")
        if bar is None or done < bar.n:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc="download")
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            state.pop("bar")

    return update


class EpochBar:
    """A tqdm bar over one epoch's images at a time: made on the epoch's first batch (a resumed
    epoch starts where it stopped), ended by ``close()`` when the epoch ends or the run stops.
    ``update`` is a Trainer's ``on_batch``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def update(self, trainer, loss: float, correct: int, n: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=len(trainer.images),
                initial=trainer.batch * trainer.batch_size - n,
                unit="img",
                desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
                disable=self.quiet or None,
                leave=False,
            )
        self.bar.update(n)
        self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{correct / n:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load_split(dataset: str, split: str, data_dir: str | None, limit: int | None = None):
    from ..data import load

    images, labels = load(dataset, split, data_dir, progress=download_progress())
    if limit is not None:
        if limit < 1:
            raise ScratchCNNError(f"--limit must be at least 1, got {limit}")
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_model(path: str):
    from . import Classifier

    return Classifier.load(path)


def check_writable(path: Path, folder: bool = False) -> None:
    """Raise ScratchCNNError now, before any work, if ``path`` (a file, or with ``folder`` a
    folder) cannot be written: it is the wrong kind of thing, a parent is a file, or the
    nearest existing folder above it is not writable."""
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise ScratchCNNError(f"{path} is {kind}; give {'a folder' if folder else 'a file name'}")
    parent = path if folder else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ScratchCNNError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ScratchCNNError(f"cannot write {path}: {parent} is not writable")


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


# -- train ---------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from ..data import train_val_split
    from . import Classifier, TrainingInterruptedError

    out = Path(args.out)
    ckpt = checkpoint_path(out)
    check_writable(out)  # now, not after the run
    clf = None
    if args.resume:
        if not ckpt.is_file():
            return fail(f"nothing to resume: no checkpoint at {ckpt} (train without --resume)")
        saved = read_checkpoint(ckpt)
        clf = Classifier.from_file_contents(ckpt, saved.meta, saved.arrays)
        try:
            recipe = Recipe.from_dict(saved.recipe)
        except ValueError as err:
            raise ModelFileError(f"{ckpt}: {err}") from None
        args.dataset, args.seed = clf.dataset, saved.seed
        args.val, args.limit = saved.data.get("val"), saved.data.get("limit")
        if not all(v is None or type(v) is int for v in (args.val, args.limit)):
            raise ModelFileError(f"{ckpt}: corrupt checkpoint (data settings)")
        print(
            f"Resuming {ckpt} ({clf.architecture} on {clf.dataset}, recipe settings from the "
            "checkpoint)"
        )
    else:
        recipe = get_recipe(args.recipe).with_overrides(
            arch=args.arch,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            schedule=args.schedule,
            augment=args.augment,
            ema=args.ema,
            label_smoothing=args.label_smoothing,
        )
        args.arch = recipe.arch

    images, labels = load_split(args.dataset, "train", args.data_dir, args.limit)
    val_size = args.val if args.val is not None else min(5000, len(images) // 10)
    (train_x, train_y), (val_x, val_y) = train_val_split(images, labels, val_size, seed=0)
    test_x, test_y = load_split(args.dataset, "test", args.data_dir)

    named = "" if clf is not None else f" (recipe {args.recipe})"
    if clf is None:
        clf = Classifier.create(recipe.arch, dataset=args.dataset, seed=args.seed)
    clf.fast = not args.plain
    print(clf.summary())
    r = recipe
    print(
        f"Training {clf.architecture}{named} on {len(train_x):,} {args.dataset} images "
        f"(validation {len(val_x):,}): {r.epochs} epoch(s), batch {r.batch_size}, {r.optimizer} "
        f"lr {r.lr:g} ({r.schedule}), augment {r.augment}"
        + (f", EMA {r.ema:g}" if r.ema else "")
        + (", test-time shifts" if r.tta else "")
        + f", seed {args.seed}"
    )

    bar = EpochBar(args.quiet)
    trainer_ref = {}

    def on_epoch(trainer, record):
        bar.close()
        atomic_write(
            history_path(out), lambda f: f.write(json.dumps(clf.history, indent=1).encode())
        )
        val = (
            f"  val loss {record.val_loss:.4f}  val acc {percent(record.val_accuracy)}"
            if record.val_loss is not None
            else ""
        )
        print(
            f"epoch {record.epoch}/{trainer.epochs}  loss {record.loss:.4f}  "
            f"acc {percent(record.accuracy)}{val}  "
            f"{record.samples_per_second:,.0f} img/s  {record.seconds:.1f} s",
            flush=True,
        )

    def on_trainer(trainer):
        trainer_ref["t"] = trainer

    def on_sigint(signum, frame):
        trainer = trainer_ref.get("t")
        if trainer is None or trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop()
        print(
            "\nStopping after this batch to save a checkpoint (Ctrl-C again to abort)...",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        clf.fit(
            train_x,
            train_y,
            recipe=recipe,
            val=(val_x, val_y),
            seed=args.seed,
            checkpoint=ckpt,
            resume=args.resume,
            on_batch=bar.update,
            on_epoch=on_epoch,
            on_trainer=on_trainer,
            data={"val": val_size, "limit": args.limit},
        )
    except TrainingInterruptedError:
        bar.close()
        t = trainer_ref["t"]
        print(
            f"Interrupted at epoch {t.epoch + 1}, batch {t.batch}; checkpoint saved to {ckpt}.\n"
            f"Continue with: scratchcnn train --resume --out {out}"
            + (f" --data-dir {args.data_dir}" if args.data_dir else ""),
            file=sys.stderr,
        )
        return 130
    except DivergenceError as err:
        bar.close()
        kept = f"; the last good checkpoint is kept at {ckpt}" if ckpt.is_file() else ""
        return fail(f"{err}{kept}")
    finally:
        signal.signal(signal.SIGINT, previous)

    result = clf.evaluate(test_x, test_y)
    clf.metrics.update(test_accuracy=result["accuracy"], test_loss=result["loss"])
    clf.save(out)
    ckpt.unlink(missing_ok=True)
    accuracy, loss = percent(result["accuracy"]), result["loss"]
    print(f"Test accuracy: {accuracy} on {len(test_y):,} images (loss {loss:.4f})")
    seconds = clf.training["seconds"]
    print(f"Training time: {seconds:.1f} s. Saved {out}; history in {history_path(out)}")
    return 0


# -- tune ----------------------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace) -> int:
    from . import Classifier, default_model
    from .finetune import fine_tune, read_folder

    out = Path(args.out)
    check_writable(out)
    base = Path(args.model) if args.model else default_model()
    if out.resolve() == base.resolve():
        raise ScratchCNNError(
            f"--out {out} is the model being tuned: write the tuned model to a new file, so "
            "the one it starts from stays as it was"
        )
    clf = Classifier.load(base)
    print(f"Model: {describe_model(clf, args.model, base)}")
    mine = read_folder(args.folder, clf.classes)
    per_class = np.bincount(mine.labels, minlength=len(clf.classes))
    classes = ", ".join(f"{clf.classes[i]}: {n}" for i, n in enumerate(per_class) if n)
    print(f"Your images: {len(mine)} in {args.folder} ({classes})")
    images, labels = load_split(clf.dataset, "train", args.data_dir)
    test_x, test_y = load_split(clf.dataset, "test", args.data_dir)
    bar = EpochBar(args.quiet)

    def on_epoch(trainer, record):
        bar.close()
        print(
            f"epoch {record.epoch}/{trainer.epochs}  loss {record.loss:.4f}  "
            f"acc {percent(record.accuracy)}  {record.seconds:.1f} s",
            flush=True,
        )

    report = fine_tune(
        clf,
        mine,
        (images, labels),
        epochs=args.epochs,
        lr=args.lr,
        held_share=args.hold_out,
        base_samples=args.mix,
        seed=args.seed,
        on_batch=bar.update,
        on_epoch=on_epoch,
    )
    result = clf.evaluate(test_x, test_y)
    clf.metrics.update(test_accuracy=result["accuracy"], test_loss=result["loss"])
    clf.save(out)
    before, after = report["before"], report["after"]
    held = report["held_out"]
    print(
        f"Trained on {report['trained_on']} of your images (repeated {report['repeats']} times "
        f"in each pass, augment {report['augment']}) and {report['dataset_samples']:,} "
        f"{clf.dataset} images: {report['epochs']} epoch(s), peak lr {report['lr']:g}, "
        f"{report['seconds']:.1f} s"
    )
    if held:
        print(
            f"Your {held} held-out images (not trained on): {percent(before['held_out'])} "
            f"before, {percent(after['held_out'])} after"
        )
    else:
        print(
            "No image was held out (no class has two, or --hold-out 0): only the images "
            "trained on measure it, and they flatter it"
        )
    print(
        f"Your images trained on: {percent(before['trained_on'])} before, "
        f"{percent(after['trained_on'])} after"
    )
    print(
        f"{clf.dataset} validation ({report['validation_images']:,} images): "
        f"{percent(before['validation'])} before, {percent(after['validation'])} after; "
        f"test set after: {percent(result['accuracy'])}"
    )
    print(f"Saved {out}; read with: scratchcnn predict --model {out} IMAGE")
    return 0


# -- evaluate, predict, info, plot ---------------------------------------------------------------


def check_dataset(clf, dataset: str | None) -> str:
    if dataset is not None and dataset != clf.dataset:
        raise ModelFileError(
            f"this model was trained on {clf.dataset}, not {dataset}; "
            f"evaluate it on {clf.dataset} or train a model on {dataset}"
        )
    return clf.dataset


def cmd_evaluate(args: argparse.Namespace) -> int:
    clf = load_model(args.model)
    dataset = check_dataset(clf, args.dataset)
    images, labels = load_split(dataset, "test", args.data_dir, args.limit)
    result = clf.evaluate(images, labels)
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "dataset": dataset,
                    "images": len(labels),
                    "accuracy": result["accuracy"],
                    "loss": result["loss"],
                    "precision": np.nan_to_num(result["precision"]).tolist(),
                    "recall": np.nan_to_num(result["recall"]).tolist(),
                    "confusion": result["confusion"].tolist(),
                },
                indent=1,
            )
        )
        return 0
    print(f"{args.model}: {clf.architecture} on {dataset} test set ({len(labels):,} images)")
    print(f"Accuracy: {percent(result['accuracy'])}   loss: {result['loss']:.4f}\n")
    width = max(len("class"), *(len(c) for c in clf.classes))
    print(f"{'class':>{width}}  precision  recall  support")
    support = result["confusion"].sum(axis=1)
    for i, name in enumerate(clf.classes):
        p, r = result["precision"][i], result["recall"][i]
        print(
            f"{name:>{width}}  {percent(None if np.isnan(p) else p):>9}  "
            f"{percent(None if np.isnan(r) else r):>6}  {support[i]:>7,}"
        )
    print("\nConfusion matrix (rows: true class, columns: predicted):")
    conf = result["confusion"]
    cell = max(4, len(str(conf.max())) + 1)
    print(" " * (width + 1) + "".join(f"{c[: cell - 1]:>{cell}}" for c in clf.classes))
    for name, row in zip(clf.classes, conf, strict=True):
        print(f"{name:>{width}} " + "".join(f"{v:>{cell}}" for v in row))
    return 0


UNSURE = 3  # the exit status when every image was read but some reading is unsure


def model_and_images(args: argparse.Namespace):
    """The classifier and the images of ``predict`` and ``read``: ``--model``, else a first
    argument that is a model file (.npz), else the bundled model."""
    from . import Classifier, default_model

    inputs = list(args.inputs)
    if args.model is None and inputs and inputs[0].endswith(".npz"):
        args.model = inputs.pop(0)
    if not inputs:
        raise ScratchCNNError("no images given")
    path = args.model or default_model()
    clf = Classifier.load(path)
    return clf, inputs, describe_model(clf, args.model, path)


def describe_model(clf, given: str | None, path: Path) -> str:
    """What a command says of the model it uses: the file given (else the bundled one), its
    net, dataset and test accuracy."""
    accuracy = clf.metrics.get("test_accuracy")
    where = given or f"the bundled model ({Path(path).name})"
    return f"{where}: {clf.architecture} on {clf.dataset}" + (
        f", {100 * accuracy:.2f}% on its test set" if accuracy is not None else ""
    )


def pages_of(images: list[str]) -> Iterator[tuple[str, int | None, str]]:
    """What ``predict`` and ``read`` read: (path, page, label) for each image, and for each
    page of a PDF of several pages (page from 0; None for a single picture), labelled
    "scan.pdf (page 2)"."""
    from .photos import page_count

    for path in images:
        try:
            count = page_count(path)
        except ScratchCNNError:
            count = 1  # reading it says what is wrong with it, in its turn
        for page in range(count):
            yield (path, None, path) if count == 1 else (path, page, f"{path} (page {page + 1})")


def cmd_predict(args: argparse.Namespace) -> int:
    from .photos import find_digit, read_image, save_png

    clf, images, described = model_and_images(args)
    if not args.json:
        print(f"Model: {described}")
    results, errors = [], 0
    for path, page, label in pages_of(images):
        try:
            digit = find_digit(read_image(path, label, page=page or 0), label)
        except ScratchCNNError as err:
            errors += 1
            print(f"scratchcnn: error: {err}", file=sys.stderr)
            continue
        if args.save_input:
            stem = Path(args.save_input) / Path(path).stem
            if page is not None:
                stem = stem.with_name(f"{stem.name}-page{page + 1}")
            save_png(digit.image, stem.with_name(stem.name + ".input.png"))
            save_png(digit.mask.astype(np.uint8) * 255, stem.with_name(stem.name + ".ink.png"))
        probs = clf.predict_proba(digit.image[None])[0]
        top = np.argsort(-probs)[: args.top]
        unsure = bool(probs[top[0]] < clf.threshold)
        results.append(
            {
                "image": path,
                **({} if page is None else {"page": page + 1}),
                "prediction": None if unsure else clf.classes[top[0]],
                "best_guess": clf.classes[top[0]],
                "unsure": unsure,
                "top": [{"class": clf.classes[i], "probability": float(probs[i])} for i in top],
            }
        )
        if not args.json:
            ranked = ", ".join(f"{clf.classes[i]} {100 * probs[i]:.1f}%" for i in top)
            answer = f"unsure (maybe {clf.classes[top[0]]})" if unsure else clf.classes[top[0]]
            print(f"{label}: {answer}   ({ranked})")
    if args.json:
        document = {"model": described, "threshold": clf.threshold, "images": results}
        print(json.dumps(document, indent=1, allow_nan=False))
    return 1 if errors else UNSURE if any(r["unsure"] for r in results) else 0


def cmd_read(args: argparse.Namespace) -> int:
    from .photos import read_image
    from .reader import annotate, read_number

    clf, images, described = model_and_images(args)
    if args.annotate and len(images) != 1:
        raise ScratchCNNError("--annotate takes one image at a time")
    if not args.json:
        print(f"Model: {described}")
    readings, errors, annotated = [], 0, []
    for path, page, label in pages_of(images):
        try:
            reading = read_number(clf, read_image(path, label, page=page or 0), label)
        except ScratchCNNError as err:
            errors += 1
            print(f"scratchcnn: error: {err}", file=sys.stderr)
            continue
        page_number = {} if page is None else {"page": page + 1}
        readings.append({"image": path, **page_number, **reading.to_json()})
        if args.annotate:  # a PDF's later pages beside the first: OUT-page2.png, ...
            out = Path(args.annotate)
            if page:
                out = out.with_name(f"{out.stem}-page{page + 1}{out.suffix}")
            annotate(path, reading, out, page or 0)
            annotated.append(str(out))
        if not args.json:
            print(f"{label}:")
            for row in reading.rows:
                sure = ", ".join(
                    f"{d.text} {100 * d.confidence:.1f}%" + (" unsure" if d.unsure else "")
                    for d in row.digits
                )
                print(f"  {row.text}   ({sure})")
    if args.json:
        document = {"model": described, "threshold": clf.threshold, "images": readings}
        print(json.dumps(document, indent=1, allow_nan=False))
    if annotated and not errors and not args.json:
        print(f"Annotated: {', '.join(annotated)}")
    return 1 if errors else UNSURE if any(r["unsure"] for r in readings) else 0


def cmd_info(args: argparse.Namespace) -> int:
    clf = load_model(args.model)
    info = clf.info()
    if args.json:
        print(json.dumps(info, indent=1, allow_nan=False))
        return 0
    t, m = info["training"], info["metrics"]
    recipe = t.get("recipe", {})
    print(f"Model file:   {args.model}")
    print(f"Architecture: {info['architecture']}  ({info['num_parameters']:,} parameters)")
    print(
        f"Dataset:      {info['dataset']}  (normalised with mean {info['normalization']['mean']}, "
        f"std {info['normalization']['std']})"
    )
    print(
        f"Accuracy:     test {percent(m.get('test_accuracy'))}, "
        f"validation {percent(m.get('val_accuracy'))}"
    )
    if t:
        where = t.get("machine", {})
        print(
            f"Trained:      {t.get('finished', '?')}, {t.get('seconds', 0):.1f} s on "
            f"{where.get('cpu', '?')} ({where.get('cores', '?')} cores)"
        )
        print(
            f"Settings:     {recipe.get('epochs')} epoch(s), batch {recipe.get('batch_size')}, "
            f"{recipe.get('optimizer')} lr {recipe.get('lr')} ({recipe.get('schedule')}), "
            f"augment {recipe.get('augment')}, seed {t.get('seed')}, "
            f"{t.get('train_samples', 0):,} training images"
        )
        tuned = t.get("fine_tune")
        if tuned:
            origin = t.get("data", {}).get("fine_tuned_from", {})
            print(
                f"Tuned:        from a {origin.get('architecture', '?')} model on "
                f"{tuned.get('trained_on')} of the user's images ({tuned.get('held_out')} held "
                f"out: {percent(tuned['before'].get('held_out'))} before, "
                f"{percent(tuned['after'].get('held_out'))} after)"
            )
    print(f"scratchcnn:   {info['scratchcnn_version']}\n")
    print(clf.summary())
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plots

    clf = load_model(args.model)
    images, labels = load_split(clf.dataset, "test", args.data_dir, args.limit)
    out = Path(args.out_dir)
    check_writable(out, folder=True)
    result = clf.evaluate(images, labels)
    written = []
    if clf.history:
        written.append(plots.training_curves(clf.history, out / "training_curves.png"))
    written.append(
        plots.confusion_matrix(result["confusion"], clf.classes, out / "confusion_matrix.png")
    )
    filters = plots.first_layer_filters(clf.model, out / "filters.png")
    if filters is not None:  # a net without a convolution has none
        written.append(filters)
    index = args.index % len(images)
    written.append(
        plots.feature_maps(
            clf.model,
            images[index],
            clf.prepare(images[index : index + 1])[0],
            out / "feature_maps.png",
        )
    )
    written.append(
        plots.confident_mistakes(
            images, labels, result["probabilities"], clf.classes, out / "mistakes.png"
        )
    )
    for path in written:
        print(path)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    clf = load_model(args.model)
    check_writable(Path(args.out))
    clf.export_onnx(args.out)
    print(
        f"Wrote {args.out}: uint8 images (N, 28, 28) in, probabilities (N, {len(clf.classes)}) out"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(args.model, args.host, args.port, args.data_dir)


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="scratchcnn", description="A CNN from scratch in NumPy that reads handwritten digits."
    )
    parser.add_argument("--version", action="version", version=f"scratchcnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def data_dir(p: Parser) -> None:
        p.add_argument(
            "--data-dir",
            help="folder holding the dataset's files (else $SCRATCHCNN_DATA, the cache, "
            "system copies; missing files are downloaded into the cache)",
        )

    def model_file(p: Parser) -> None:
        p.add_argument("model", help="a model file written by scratchcnn train (.npz)")

    def as_json(p: Parser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON instead of text")

    t = sub.add_parser("train", help="train a model and save it")
    t.add_argument("--dataset", choices=sorted(DATASETS), default="mnist", help="what to learn")
    t.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default="fast",
        help="a named set of settings (the options below override single ones)",
    )
    t.add_argument("--arch", choices=sorted(ARCHITECTURES), help="network (default: the recipe's)")
    t.add_argument(
        "--epochs",
        type=integer(1, 10_000),
        help="passes over the training images (default: the recipe's)",
    )
    t.add_argument(
        "--batch-size", type=integer(1, 100_000), help="images per step (default: the recipe's)"
    )
    t.add_argument(
        "--lr", type=number(0, open_low=True), help="peak learning rate (default: the recipe's)"
    )
    t.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        help="how the weights move (default: the recipe's)",
    )
    t.add_argument(
        "--momentum", type=number(0, 1), help="SGD momentum, in [0, 1) (default: the recipe's)"
    )
    t.add_argument("--weight-decay", type=number(0), help="L2 weight decay (default: the recipe's)")
    t.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="how the learning rate changes (default: the recipe's)",
    )
    t.add_argument(
        "--augment",
        choices=sorted(POLICIES),
        help="random changes to each batch: affine (digits), photo (digits as photos show "
        "them), mirror (Fashion-MNIST: flips and shifts), clothes (mirror and random erasing), "
        "none (default: the recipe's)",
    )
    t.add_argument(
        "--no-augment", dest="augment", action="store_const", const="none", help="--augment none"
    )
    t.add_argument(
        "--ema",
        type=number(0, 1),
        help="decay of an average of the weights used for validation and the final model, "
        "e.g. 0.999; 0 for none (default: the recipe's)",
    )
    t.add_argument(
        "--label-smoothing", type=number(0, 1), help="target smoothing (default: the recipe's)"
    )
    t.add_argument("--seed", type=integer(0, 2**63 - 1), default=0, help="random seed")
    data_dir(t)
    t.add_argument("--out", default="model.npz", help="model file to write")
    t.add_argument(
        "--val",
        type=integer(0),
        help="training images held out for validation (default: 5000, or a tenth)",
    )
    t.add_argument("--limit", type=integer(1), help="train on the first N training images only")
    t.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint beside --out"
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--plain",
        action="store_true",
        help="run every layer as its file in scratchcnn/nn reads (no fast rewrites, no threads)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy, precision/recall, confusion matrix")
    model_file(e)
    e.add_argument("--dataset", choices=sorted(DATASETS), help="must be the model's dataset")
    data_dir(e)
    e.add_argument("--limit", type=integer(1), help="use only the first N test images")
    as_json(e)
    e.set_defaults(func=cmd_evaluate)

    def images_and_model(p: Parser, what: str) -> None:
        p.add_argument(
            "inputs",
            nargs="+",
            metavar="IMAGE",
            help=f"image files, {what}; each page of a PDF is read (a model file may come "
            "first instead of --model)",
        )
        p.add_argument("--model", help="model file (default: the model bundled with scratchcnn)")

    p = sub.add_parser(
        "predict",
        help="read photos or drawings of single digits (PNG, JPEG, ...); exit status 3 when "
        "a reading is unsure",
    )
    images_and_model(p, "one digit each")
    p.add_argument("--top", type=integer(1, 1000), default=3, help="how many classes to show")
    p.add_argument(
        "--save-input",
        metavar="DIR",
        help="write the 28x28 image the network saw and the ink found, per image, to DIR",
    )
    as_json(p)
    p.set_defaults(func=cmd_predict)

    r = sub.add_parser(
        "read",
        help="read whole numbers in photos: every digit, rows top to bottom; exit status 3 "
        "when a digit is unsure",
    )
    images_and_model(r, "each a number or several rows of numbers")
    r.add_argument(
        "--annotate",
        metavar="OUT.png",
        help="draw the boxes and the readings onto a copy (a PDF's second page onto "
        "OUT-page2.png, and so on)",
    )
    as_json(r)
    r.set_defaults(func=cmd_read)

    tu = sub.add_parser(
        "tune",
        help="teach a model your handwriting: fine-tune it on a folder of your labelled photos",
    )
    tu.add_argument(
        "folder",
        help="a folder with one subfolder per class, named by it (my-digits/7/a.jpg, ...)",
    )
    tu.add_argument(
        "--model", help="the model to start from (default: the model bundled with scratchcnn)"
    )
    tu.add_argument("--out", default="tuned.npz", help="the tuned model file to write")
    tu.add_argument("--epochs", type=integer(1, 1000), default=3, help="passes over the mix")
    tu.add_argument(
        "--lr",
        type=number(0, open_low=True),
        help="peak learning rate (default: a tenth of the model's own)",
    )
    tu.add_argument(
        "--hold-out",
        type=number(0, 1),
        default=0.25,
        help="share of your images kept out of training to measure it, in [0, 1)",
    )
    tu.add_argument(
        "--mix",
        type=integer(1),
        default=6000,
        help="the dataset's own training images in each pass beside yours, so the model does "
        "not forget them",
    )
    tu.add_argument("--seed", type=integer(0, 2**63 - 1), default=0, help="random seed")
    data_dir(tu)
    tu.add_argument("--quiet", action="store_true", help="no progress bar")
    tu.set_defaults(func=cmd_tune)

    pl = sub.add_parser(
        "plot", help="PNG figures: curves, confusion, filters, feature maps, mistakes"
    )
    model_file(pl)
    pl.add_argument("--out-dir", default="plots", help="folder to write the figures to")
    pl.add_argument(
        "--index", type=integer(0), default=0, help="test image shown in the feature maps"
    )
    data_dir(pl)
    pl.add_argument("--limit", type=integer(1), help="use only the first N test images")
    pl.set_defaults(func=cmd_plot)

    i = sub.add_parser("info", help="what a model file holds and how it was trained")
    model_file(i)
    as_json(i)
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("serve", help="a local web page: draw a digit, see every layer respond")
    s.add_argument(
        "model", nargs="?", help="model file (default: the model bundled with scratchcnn)"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (this machine only)")
    s.add_argument("--port", type=integer(0, 65535), default=8000, help="port (0: any free one)")
    data_dir(s)
    s.set_defaults(func=cmd_serve)

    x = sub.add_parser("export", help="write the model as ONNX, for ONNX Runtime and others")
    model_file(x)
    x.add_argument("out", help="the ONNX file to write (.onnx)")
    x.set_defaults(func=cmd_export)

    # Listed for --help; main() hands its arguments to scratchcnn.app.bench untouched.
    sub.add_parser("bench", help="speed against PyTorch (scratchcnn bench --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    # The plain engine makes each step's arrays afresh; evaluate runs chunk after chunk of
    # thousands of images through the compiled path, whose inference memory is new each chunk.
    if (args.func is cmd_train and args.plain) or args.func is cmd_evaluate:
        keep_freed_memory()
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit flush quiet
        return 0
    except ScratchCNNError as err:
        return fail(str(err))
    except (ValueError, OSError) as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
