"""The plan: which fast ops compute a Sequential's layers, in the order they run.

Two rewrites, both exact, then one op per remaining layer:

1. A ReLU directly followed by a max-pool runs after it: max(relu(x)) = relu(max(x)), and so do
   the gradients (a window's maximum sits at the same place before and after the ReLU, unless
   it is <= 0, where the ReLU's gradient is 0 either way). The ReLU then touches PH*PW times
   fewer values.
2. A Conv2D directly followed by a max-pool whose stride is its size runs with it as one
   ``ConvPoolOp``; so do Conv2D, BatchNorm2D, max-pool when the pool tiles the conv output
   exactly (the norm's statistics must see every conv output). A ReLU right after the pool
   (moved there by 1, or declared there) joins the op: it then runs on the pooled values while
   they are in cache, and in inference without a pass of its own over the output.

Every other Conv2D, ReLU, batch norm and Dropout gets its fast op (``ops.py``); any other layer
(Dense, Flatten, Softmax, an overlapping max-pool, ...) runs as it is.

Inference has a plan of its own (``inference_plan``): there a batch norm is a fixed affine map,
so every Conv2D [BatchNorm2D] [max-pool of stride = size] [ReLU] runs as one
``ConvInferenceOp`` (``inference.py``), whether or not the pool tiles the conv output.
"""

from __future__ import annotations

from ..nn import Sequential
from ..nn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dropout, Layer, MaxPool2D, ReLU
from .convpool import ConvPoolOp, pool_tiles
from .inference import ConvInferenceOp
from .ops import BatchNormOp, ConvOp, DropoutOp, ReLUOp


def relu_after_pool(layers: list[Layer]) -> list[Layer]:
    """``layers`` with every ReLU that directly precedes a MaxPool2D moved after it."""
    order = list(layers)
    for i in range(len(order) - 1):
        if isinstance(order[i], ReLU) and isinstance(order[i + 1], MaxPool2D):
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def fusable_pool(layer: Layer) -> bool:
    return isinstance(layer, MaxPool2D) and layer.stride == layer.pool_size


def relu_at(order: list[Layer], index: int) -> ReLU | None:
    """The ReLU at ``order[index]``, or None if there is none."""
    layer = order[index] if index < len(order) else None
    return layer if isinstance(layer, ReLU) else None


def plan(model: Sequential) -> list[Layer]:
    """The ops that compute ``model``'s layers, in the order they run."""
    inputs = dict(
        zip(map(id, model.layers), [model.input_shape, *model.output_shapes], strict=False)
    )
    outputs = dict(zip(map(id, model.layers), model.output_shapes, strict=True))
    order = relu_after_pool(model.layers)
    ops: list[Layer] = []
    i = 0
    while i < len(order):
        layer, after = order[i], order[i + 1 : i + 3]
        if isinstance(layer, Conv2D) and after and fusable_pool(after[0]):
            relu = relu_at(order, i + 2)
            ops.append(ConvPoolOp(layer, after[0], relu=relu))
            i += 2 + (relu is not None)
        elif (
            isinstance(layer, Conv2D)
            and len(after) == 2
            and isinstance(after[0], BatchNorm2D)
            and fusable_pool(after[1])
            and pool_tiles(outputs[id(layer)], after[1].pool_size)
        ):
            relu = relu_at(order, i + 3)
            ops.append(ConvPoolOp(layer, after[1], norm=BatchNormOp(after[0]), relu=relu))
            i += 3 + (relu is not None)
        else:
            ops.append(single_op(layer, inputs[id(layer)]))
            i += 1
    for before, op, after in zip([None, *ops], ops, [*ops[1:], None], strict=False):
        if isinstance(op, BatchNormOp):  # see BatchNormOp.owns_input
            op.owns_input = isinstance(before, ConvOp)
            op.owns_grad = isinstance(after, (ReLUOp, MaxPool2D))
    return ops


def inference_plan(model: Sequential) -> list[Layer]:
    """The ops that compute ``model``'s layers in inference (``forward(x, training=False)``)."""
    inputs = dict(
        zip(map(id, model.layers), [model.input_shape, *model.output_shapes], strict=False)
    )
    order = relu_after_pool(model.layers)
    ops: list[Layer] = []
    i = 0
    while i < len(order):
        layer = order[i]
        if not isinstance(layer, Conv2D):
            ops.append(single_op(layer, inputs[id(layer)]))
            i += 1
            continue
        i += 1
        norm = order[i] if i < len(order) and isinstance(order[i], BatchNorm2D) else None
        i += norm is not None
        pool = order[i] if i < len(order) and fusable_pool(order[i]) else None
        i += pool is not None
        relu = relu_at(order, i)
        i += relu is not None
        ops.append(ConvInferenceOp(layer, norm, pool, relu))
    return ops


def single_op(layer: Layer, input_shape: tuple[int, ...]) -> Layer:
    """The fast op for one layer with one sample's ``input_shape``, or the layer itself."""
    if isinstance(layer, Conv2D):
        return ConvOp(layer)
    if isinstance(layer, ReLU):
        return ReLUOp(layer)
    if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
        return BatchNormOp(layer)
    if isinstance(layer, Dropout):
        return DropoutOp(layer, input_shape)
    return layer
