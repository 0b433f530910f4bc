"""im2col in the layouts the fast ops want (the plain one, and col2im, are in ``nn/im2col.py``).

The plain im2col gives cols (N, OH, OW, KH, KW, C): one copy whose contiguous runs are only C
values long. Two other orders of the same values are cheaper to build or to use:

* offset-major, (KH, KW, N, OH, OW, C): KH*KW copies of long runs. For one input channel
  (C = 1) that is the transposed patch matrix (KH*KW, N*OH*OW), and much cheaper to gather;
* pool order, (PH, PW, N, QH, QW) for the output pixels of a conv followed by a PH x PW
  max-pool of stride PH x PW (QH = OH // PH): pixel (pi, pj, n, q, r) is output pixel
  (n, q*PH + pi, r*PW + pj). Each window offset (pi, pj) is then one contiguous block of rows,
  and the pixels a ragged pool edge would drop are never gathered.

Offset-major in pool order is gathered in two copies. Pixel (pi, pj, n, q, r) at kernel offset
(i, j) reads padded row (q*PH + pi)*SH + i = q*PH*SH + u with u = pi*SH + i, and likewise
column v: so it first copies the (u, v) "phases", B[u, v, n, q, r, c] = x[n, q*PH*SH + u,
r*PW*SW + v, c], ((PH-1)*SH + KH) x ((PW-1)*SW + KW) of them, 36 against 100 patch values for a
5x5 kernel and a 2x2 pool; then the patches are B[pi*SH + i, pj*SW + j], a view of B whose
inner axes (n, q, r, c) are contiguous, so the second copy moves long runs. Together they cost
less than one copy straight from x, whose innermost values are PW*SW apart (the user net's 5x5
layer: benchmarks/results/profile-infer-user-1000*.txt).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .workspace import FRESH_MEMORY, Workspace


def strided(base: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """``as_strided(base, shape, strides)``: a view of ``base``'s memory, to read from. A
    C-contiguous base's is made as an ndarray over its buffer, which checks that the view stays
    inside it, in a sixth of as_strided's time (what a batch of one image notices)."""
    if base.flags.c_contiguous:
        return np.ndarray(shape, base.dtype, buffer=base, strides=strides)
    return as_strided(base, shape=shape, strides=strides, writeable=False)


def pad(x: np.ndarray, padding: tuple[int, int], workspace: Workspace = FRESH_MEMORY) -> np.ndarray:
    """``nn.im2col.pad`` (zeros around the two spatial axes of (N, H, W, C)) into memory from
    ``workspace``: only the border is zeroed, the inside is one copy."""
    ph, pw = padding
    if not (ph or pw):
        return x
    n, h, w, c = x.shape
    shape = (n, h + 2 * ph, w + 2 * pw, c)
    if workspace.reuse:
        xp = workspace.get("padded", shape, x.dtype)
        for border in (xp[:, :ph], xp[:, ph + h :], xp[:, :, :pw], xp[:, :, pw + w :]):
            border.fill(0)
    else:  # new memory comes zeroed from the system, in one call
        xp = np.zeros(shape, x.dtype)
    xp[:, ph : ph + h, pw : pw + w] = x
    return xp


def gather_patches(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    offset_major: bool = False,
    pool: tuple[int, int] = (1, 1),
    workspace: Workspace = FRESH_MEMORY,
) -> np.ndarray:
    """The patches of ``x`` (N, H, W, C) in pool order, as (PH, PW, N, QH, QW, KH, KW, C), or
    offset-major, (KH, KW, PH, PW, N, QH, QW, C); the two unit axes of the default pool (1, 1)
    are dropped, leaving (N, OH, OW, KH, KW, C) or (KH, KW, N, OH, OW, C). The result is
    C-contiguous and its memory comes from ``workspace``."""
    return PatchGather(pad(x, padding, workspace), kernel, stride, offset_major, pool, workspace)()


def patch_matrix(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    pool: tuple[int, int] = (1, 1),
    workspace: Workspace = FRESH_MEMORY,
) -> np.ndarray:
    """The (M, KH*KW*C) patch matrix of ``x`` with rows in pool order (plain order for the
    default pool). With one input channel the patches are gathered offset-major and the
    matrix is the transpose of that, a free view."""
    single = x.shape[-1] == 1
    gather = PatchGather(pad(x, padding, workspace), kernel, stride, single, pool, workspace)
    gather()
    return gather.matrix


class PatchGather:
    """``PatchGather(xp, kernel, stride, offset_major=False, pool=(1, 1), workspace)``: the
    copies that gather the patches of a padded input ``xp`` (N, HP, WP, C) into ``workspace``'s
    memory, laid out as ``gather_patches`` says, worked out once. Calling it makes the copies
    and returns the patches; ``matrix`` is them as (M, KH*KW*C). A caller that refills ``xp``
    in place can call it again and again (one image after another: ``inference.py``)."""

    def __init__(
        self,
        xp: np.ndarray,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        offset_major: bool = False,
        pool: tuple[int, int] = (1, 1),
        workspace: Workspace = FRESH_MEMORY,
    ) -> None:
        n, hp, wp, c = xp.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pool
        qh = ((hp - kh) // sh + 1) // ph
        qw = ((wp - kw) // sw + 1) // pw
        s_n, s_h, s_w, s_c = xp.strides
        self.offset_major, self.channels, self.k = offset_major, c, kh * kw * c
        self.copies: list[tuple[np.ndarray, np.ndarray]] = []  # (to, from), in order
        if offset_major and (ph, pw) != (1, 1):  # in two copies: see the module's docstring
            u, v = (ph - 1) * sh + kh, (pw - 1) * sw + kw
            phases_view = strided(
                xp, (u, v, n, qh, qw, c), (s_h, s_w, s_n, ph * sh * s_h, pw * sw * s_w, s_c)
            )
            phases = workspace.get("phases", phases_view.shape, xp.dtype)
            b_u, b_v, *inner = phases.strides
            shape = (kh, kw, ph, pw, n, qh, qw, c)
            views = strided(phases, shape, (b_u, b_v, sh * b_u, sw * b_v, *inner))
            self.cols = workspace.get("patches", shape, xp.dtype)
            self.copies = [(phases, phases_view), (self.cols, views)]
            return
        # Pixel (pi, pj, n, q, r) reads x[n, (q*PH + pi)*SH + i, (r*PW + pj)*SW + j, c] for kernel
        # offset (i, j): every index is linear, so one strided view holds them all.
        pixels = [(ph, sh * s_h), (pw, sw * s_w), (n, s_n)]
        pixels += [(qh, ph * sh * s_h), (qw, pw * sw * s_w)]
        offsets = [(kh, s_h), (kw, s_w)]
        channel = [(c, s_c)]
        layout = offsets + pixels + channel if offset_major else pixels + offsets + channel
        shape, strides = zip(*layout, strict=True)
        cols = workspace.get("patches", shape, xp.dtype)
        self.copies = [(cols, strided(xp, shape, strides))]
        if ph == pw == 1:  # drop the two unit pool axes
            unit_axes = 2 if offset_major else 0
            cols = cols.reshape(shape[:unit_axes] + shape[unit_axes + 2 :])
        self.cols = cols

    def __call__(self) -> np.ndarray:
        for to, source in self.copies:
            np.copyto(to, source)
        return self.cols

    @property
    def matrix(self) -> np.ndarray:
        """The patches as the (M, KH*KW*C) patch matrix, a view: row-major in pool order, or
        for one channel offset-major, the transpose of a (KH*KW, M) array."""
        if not self.offset_major:
            return self.cols.reshape(-1, self.k)
        if self.channels != 1:
            raise ValueError("offset-major patches of several channels are no patch matrix")
        return self.cols.reshape(self.k, -1).T
