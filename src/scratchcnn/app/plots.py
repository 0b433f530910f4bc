"""Figures of a trained model, drawn with matplotlib's headless Agg backend into PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from ..fileio import atomic_write  # noqa: E402


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda out: fig.savefig(out, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def training_curves(history: list[dict], path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-", label="train")
    if history and history[0].get("val_loss") is not None:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [100 * h["accuracy"] for h in history], "o-", label="train")
    if history and history[0].get("val_accuracy") is not None:
        ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(confusion: np.ndarray, classes: list[str], path: Path) -> Path:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = ax.imshow(np.log1p(confusion), cmap="Blues")
    for i in range(k):
        for j in range(k):
            color = "white" if confusion[i, j] > confusion.max() / 3 else "black"
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix (test set)",
    )
    ax.set_xticklabels(classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
    ax.set_yticklabels(classes)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    return _save(fig, path)


def first_layer_filters(model, path: Path) -> Path | None:
    """The first convolution's kernels (on the first input channel); None without one."""
    try:
        conv, weight = model.first_filters()  # (F, KH, KW)
    except ValueError:
        return None
    cols = min(8, len(weight))
    rows = -(-len(weight) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4), squeeze=False)
    limit = np.abs(weight).max()
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(weight):
            ax.imshow(weight[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(str(i), fontsize=8)
    fig.suptitle(f"First-layer filters of {conv!r} (red +, blue -)")
    return _save(fig, path)


def feature_maps(model, image: np.ndarray, x: np.ndarray, path: Path, per_layer: int = 8) -> Path:
    """The input and up to ``per_layer`` channels of every conv and pooling layer's output."""
    outputs = model.activations(x[None])
    shown = [(model.layers[i], outputs[i][0]) for i in model.feature_map_layers()]
    rows = len(shown) + 1
    fig, axes = plt.subplots(rows, per_layer, figsize=(1.4 * per_layer, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image, cmap="gray")
    axes[0, 0].set_title("input", fontsize=8)
    for row, (layer, out) in enumerate(shown, start=1):
        for c in range(min(per_layer, out.shape[-1])):
            axes[row, c].imshow(out[..., c], cmap="viridis")
        axes[row, 0].set_title(f"{layer!r} {out.shape[0]}x{out.shape[1]}", fontsize=7, loc="left")
    fig.suptitle("Feature maps, layer by layer")
    return _save(fig, path)


def confident_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    path: Path,
    count: int = 16,
) -> Path:
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:count]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[i], cmap="gray")
        guess = predicted[i]
        title = f"{classes[guess]} ({100 * probs[i, guess]:.0f}%)\ntrue {classes[labels[i]]}"
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"Most confident mistakes ({len(np.flatnonzero(predicted != labels))} in all)")
    return _save(fig, path)
