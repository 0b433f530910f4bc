"""Looking inside a prediction, with the network's own forward and backward passes.

* ``saliency``: the gradient of a class's score (its logit) with respect to every input pixel,
  computed by back-propagating 1 for that class through the layers' own ``backward``;
* ``grad_cam``: for every convolution, Grad-CAM (Selvaraju et al. 2017): each channel of its
  feature map weighted by the mean gradient of the class score over the map, summed, ReLU;
* ``pool_masks``: for every max-pool, the binary mask of the pixels that won their windows;
* ``one_step``: one SGD step on one image and its true label, with every layer's dL/dW, the
  update and the probabilities before and after (on a copy: the served model is unchanged);
* ``transform``: the image rotated, scaled, shifted, thickened or thinned, and noised.

All of it runs on a copy of the plain model in which each batch norm is frozen to its
inference form, y = x * scale + shift with its running statistics (a single image has no
batch statistics), and dropout does nothing: the function being explained is the one that
predicts.
"""

from __future__ import annotations

import copy

import numpy as np
from scipy import ndimage

from ..nn import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Layer, MaxPool2D, Sequential
from ..nn import softmax as _softmax


class FrozenNorm(Layer):
    """A batch norm in its inference form, y = x * scale + shift per channel, with backward."""

    def __init__(self, norm: BatchNorm1D | BatchNorm2D) -> None:
        super().__init__()
        running_var = norm.buffers["running_var"]
        self.scale = norm.params["weight"] / np.sqrt(running_var + norm.eps)
        self.shift = norm.params["bias"] - norm.buffers["running_mean"] * self.scale
        self.name = repr(norm)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        return x * self.scale + self.shift

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self.scale

    def __repr__(self) -> str:
        return self.name


class Identity(Layer):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out

    def __repr__(self) -> str:
        return self.name


def inference_copy(model: Sequential) -> list[Layer]:
    """The model's layers, copied, with batch norms frozen and dropout off; every layer
    computes its input gradient (the first included: the saliency needs it)."""
    layers = []
    for layer in copy.deepcopy(model.layers):
        if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
            layer = FrozenNorm(layer)
        elif isinstance(layer, Dropout):
            layer = Identity(repr(layer))
        layer.needs_input_grad = True
        layers.append(layer)
    return layers


def _forward(layers: list[Layer], x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output, in training mode (each layer caches for its backward)."""
    outputs = []
    for layer in layers:
        x = layer.forward(x, training=True)
        outputs.append(x)
    return outputs


def _backward(layers: list[Layer], grad: np.ndarray) -> list[np.ndarray]:
    """dL/d(output) of every layer, and last dL/d(input): back-propagation step by step."""
    grads = [grad]
    for layer in reversed(layers):
        grad = layer.backward(grad)
        grads.append(grad)
    return grads[::-1]  # grads[i] = dL/d(input of layer i); grads[-1] = dL/d(logits)


def saliency(model: Sequential, x: np.ndarray, target: int) -> np.ndarray:
    """d(logit of ``target``)/d(x) for one normalised image x (1, H, W, C): (H, W, C)."""
    return explain(model, x, target)["saliency"]


def explain(model: Sequential, x: np.ndarray, target: int) -> dict:
    """Saliency, Grad-CAM of every convolution and the binary mask of every max-pool, for one
    normalised image x (1, H, W, C) and the class ``target``."""
    layers = [layer.astype(np.float64) for layer in inference_copy(model)]
    outputs = _forward(layers, x.astype(np.float64))
    seed = np.zeros_like(outputs[-1])
    seed[0, target] = 1.0
    grads = _backward(layers, seed)
    cams, masks = [], []
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv2D):
            feature, grad = outputs[i][0], grads[i + 1][0]  # (H, W, F), its gradient
            weights = grad.mean(axis=(0, 1))  # one per channel
            cam = np.maximum((feature * weights).sum(axis=-1), 0)
            cams.append({"index": i, "layer": repr(layer), "map": cam})
        if isinstance(layer, MaxPool2D):
            before = x if i == 0 else outputs[i - 1]
            _, winner = layer.max_and_winner(before)
            masks.append(
                {
                    "index": i,
                    "layer": repr(layer),
                    "mask": layer.binary_mask(winner, before.shape)[0],  # (H, W, C) of 0/1
                    "input": before[0],
                }
            )
    return {
        "probabilities": _softmax(outputs[-1])[0],
        "saliency": grads[0][0],
        "grad_cam": cams,
        "pool_masks": masks,
    }


def one_step(model: Sequential, x: np.ndarray, label: int, lr: float) -> dict:
    """One SGD step, w <- w - lr * dL/dw, on one normalised image and its true label, on a copy
    of the model. For every layer with weights: dL/dW, the update, their sizes; and the class
    probabilities before and after."""
    from ..nn import SoftmaxCrossEntropy

    layers = inference_copy(model)
    loss_fn = SoftmaxCrossEntropy()
    logits = _forward(layers, x)[-1]
    loss = loss_fn.forward(logits, np.array([label]))
    before = loss_fn.probs[0].copy()
    _backward(layers, loss_fn.backward())
    changes = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, (Conv2D, Dense)):
            continue
        grad = layer.grads["weight"]
        update = -lr * grad
        changes.append(
            {
                "index": i,
                "layer": repr(layer),
                "grad": grad,
                "update": update,
                "grad_norm": float(np.linalg.norm(grad)),
                "weight_norm": float(np.linalg.norm(layer.params["weight"])),
            }
        )
        for key in layer.params:
            layer.params[key] -= (lr * layer.grads[key]).astype(layer.params[key].dtype)
    after_logits = _forward(layers, x)[-1]
    return {
        "loss": float(loss),
        "loss_after": float(loss_fn.forward(after_logits, np.array([label]))),
        "before": before,
        "after": loss_fn.probs[0].copy(),
        "layers": changes,
    }


def transform(
    image: np.ndarray,
    rotate: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    thickness: int = 0,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A uint8 (28, 28) digit rotated by ``rotate`` degrees and scaled about its centre,
    shifted by (dy, dx) pixels, its strokes thickened (``thickness`` > 0, grey dilations) or
    thinned (< 0), with Gaussian noise of ``noise`` (in [0, 1] units): (28, 28) uint8."""
    x = image.astype(np.float64) / 255
    centre = np.array([13.5, 13.5])
    angle = np.deg2rad(rotate)
    inverse = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]]) / scale
    offset = centre - inverse @ (centre + np.asarray(shift, dtype=np.float64))
    x = ndimage.affine_transform(x, inverse, offset=offset, order=1, mode="constant", cval=0.0)
    for _ in range(abs(int(thickness))):
        x = (ndimage.grey_dilation if thickness > 0 else ndimage.grey_erosion)(x, size=(2, 2))
    if noise:
        x = x + np.random.default_rng(seed).normal(0, noise, x.shape)
    return np.uint8(np.clip(np.rint(x * 255), 0, 255))
