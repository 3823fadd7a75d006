"""Measurement operators for active subsampling (ADS), DPS guidance and hard data consistency.

Images are real tensors ``x [..., C, H, W]``; an MRI image is complex and stored as two channels
(real, imag), so ``C = 2``. Every operator lists the *full* measurement as ``K`` candidates (things one
can acquire: a pixel, an image column, a k-space line) of ``E`` real entries each:

==========================  ============================  =========  ===========
operator                    full(x)                       K          E
==========================  ============================  =========  ===========
``PixelOperator``           permutation of x              H * W      C
``ColumnOperator``          permutation of x              W          C * H
``KSpaceLineOperator``      fastmri.fft2c (orthonormal)   W          2 * H
==========================  ============================  =========  ===========

``full`` is unitary for all three (a permutation, or the orthonormal centred FFT), so ``full_adjoint``
is its exact inverse. A ``mask: BoolTensor [B, K]`` (B conditions / slices) selects what has been
measured; ``x`` has leading dims ``(B,)`` or ``(B, N)`` (N particles share their condition's mask):

    forward(x)      = M * full(x)                              A x in the ADS paper (Sec. 3)
    adjoint(Y)      = full_adjoint(M * Y)                      A^T Y
    project(x, y)   = full_adjoint((1 - M) * full(x) + M * y)  hard data consistency
    residual_norm   = || M * (y - full(x0)) ||_2 per sample    the DPS loss (norm, not squared)

The k-space operator uses one centred FFT convention everywhere (``fastmri.fft2c`` / ``ifft2c``), so its
line index ``w`` is the same column that a fastMRI mask (shape ``[..., 1, W, 1]``) selects.
``MeasurementOracle`` is the only object that holds the ground truth; it records every read.
"""

from __future__ import annotations

import fastmri
import torch
from torch import Tensor

from gendiff.registry import Registry

__all__ = [
    "OPERATORS",
    "ColumnOperator",
    "KSpaceLineOperator",
    "MeasurementOracle",
    "PixelOperator",
    "SubsamplingOperator",
    "make_operator",
]

OPERATORS: Registry[type[SubsamplingOperator]] = Registry("measurement operator")


def _fmt(shape: tuple[int, ...] | torch.Size) -> str:
    return str(tuple(int(s) for s in shape))


class SubsamplingOperator:
    """Base class: a unitary full measurement split into candidates, plus a measurement mask.

    Subclasses implement ``full`` (``[..., C, H, W] -> [..., K, E]``), ``full_adjoint`` (its inverse)
    and ``_to_layout`` (candidate entries placed at their image-grid / k-space-grid position, used
    for figures).

    Args:
        image_shape: ``(C, H, W)`` of one image.
        batch_size: number of conditions B of the initial (empty) mask.
        mask: optional initial mask ``BoolTensor [B, K]``; overrides ``batch_size``.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], batch_size: int = 1, mask: Tensor | None = None
    ) -> None:
        if len(image_shape) != 3 or any(int(s) <= 0 for s in image_shape):
            raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        if mask is None:
            self.reset(batch_size)
        else:
            self.mask = self._check_mask(mask)

    # ------------------------------------------------------------------ sizes
    @property
    def num_candidates(self) -> int:
        """K, the number of acquirable candidates."""
        raise NotImplementedError

    @property
    def entries_per_candidate(self) -> int:
        """E, the number of real entries per candidate."""
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        """B, the number of conditions the mask holds."""
        return int(self.mask.shape[0])

    # ------------------------------------------------------------------ the unitary full measurement
    def full(self, x: Tensor) -> Tensor:
        """Full measurement ``x [..., C, H, W] -> Y [..., K, E]``."""
        raise NotImplementedError

    def full_adjoint(self, y: Tensor) -> Tensor:
        """Adjoint (= inverse) of ``full``: ``Y [..., K, E] -> x [..., C, H, W]``."""
        raise NotImplementedError

    def _to_layout(self, y: Tensor) -> Tensor:
        """Place candidate entries ``[..., K, E]`` on the measurement grid ``[..., C, H, W]``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ masked operator
    def forward(self, x: Tensor) -> Tensor:
        """Masked measurement ``M * full(x)``: ``x [B(, N), C, H, W] -> Y [B(, N), K, E]``."""
        self._check_image(x)
        return self.full(x) * self._mask_for(x.shape[:-3], x)

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        """``full_adjoint(M * Y)``: ``Y [B(, N), K, E] -> x [B(, N), C, H, W]``."""
        self._check_measurement(y)
        return self.full_adjoint(y * self._mask_for(y.shape[:-2], y))

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        """Hard data consistency: replace the measured entries of ``full(x)`` by ``y``.

        MRI: ``x <- IFFT((1 - M) FFT(x) + M y)``.

        Args:
            x: images ``[B(, N), C, H, W]``.
            y: measurements ``[B, K, E]`` (shared by the particles) or ``[B(, N), K, E]``;
                only entries at measured candidates are used.

        Returns:
            ``[B(, N), C, H, W]``, consistent with ``y`` at every measured candidate.
        """
        self._check_image(x)
        m = self._mask_for(x.shape[:-3], x).bool()
        yx = self.full(x)
        return self.full_adjoint(torch.where(m, self._expand_y(y, x.shape[:-3]).to(yx.dtype), yx))

    def residual_norm(self, x0: Tensor, y: Tensor) -> Tensor:
        """DPS residual ``|| y - A x0 ||_2`` per sample (measured entries only).

        Args:
            x0: ``[B(, N), C, H, W]`` (e.g. Tweedie estimates).
            y: ``[B, K, E]`` or ``[B(, N), K, E]``.

        Returns:
            ``[B]`` or ``[B, N]``.
        """
        self._check_image(x0)
        m = self._mask_for(x0.shape[:-3], x0)
        r = (self._expand_y(y, x0.shape[:-3]).to(x0.dtype) - self.full(x0)) * m
        return r.flatten(-2).norm(dim=-1)

    # ------------------------------------------------------------------ the mask
    def reset(self, batch_size: int) -> None:
        """Start from an empty mask ``[batch_size, K]``."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.mask = torch.zeros(int(batch_size), self.num_candidates, dtype=torch.bool)

    def with_mask(self, mask: Tensor) -> SubsamplingOperator:
        """A new operator of the same kind and image shape holding (a copy of) ``mask [B, K]``."""
        return type(self)(self.image_shape, mask=mask)

    def acquire(self, indices: Tensor) -> None:
        """Mark candidate ``indices[b]`` of condition ``b`` as measured.

        Args:
            indices: ``LongTensor [B]``.

        Raises:
            ValueError: wrong shape, an index out of ``[0, K)``, or a candidate already measured.
        """
        idx = torch.as_tensor(indices).to(device=self.mask.device)
        if idx.shape != (self.batch_size,) or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(
                f"indices must be an integer tensor of shape ({self.batch_size},), got "
                f"{idx.dtype} {_fmt(idx.shape)}"
            )
        idx = idx.long()
        if bool(((idx < 0) | (idx >= self.num_candidates)).any()):
            raise ValueError(f"candidate index out of range [0, {self.num_candidates}): {idx.tolist()}")
        rows = torch.arange(self.batch_size, device=idx.device)
        taken = self.mask[rows, idx]
        if bool(taken.any()):
            bad = [(int(b), int(i)) for b, i in zip(rows[taken], idx[taken])]
            raise ValueError(f"candidates already measured (row, index): {bad}")
        mask = self.mask.clone()
        mask[rows, idx] = True
        self.mask = mask

    def mask_image(self) -> Tensor:
        """The mask on the measurement grid (image grid, or k-space for MRI): float ``[B, 1, H, W]``."""
        m = self.mask.float()[:, :, None].expand(-1, -1, self.entries_per_candidate)
        return self._to_layout(m)[:, :1].contiguous()

    def to(self, device: torch.device | str) -> SubsamplingOperator:
        """Move the mask to ``device`` (in place); returns ``self``."""
        self.mask = self.mask.to(device)
        return self

    # ------------------------------------------------------------------ validation helpers
    def _check_image(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor image, got {type(x).__name__}")
        if x.is_complex() or not x.is_floating_point():
            raise TypeError(f"expected a real floating-point image (complex as 2 channels), got {x.dtype}")
        if x.dim() < 3 or tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"expected x with trailing shape {self.image_shape}, got {_fmt(x.shape)}")

    def _check_measurement(self, y: Tensor) -> None:
        ke = (self.num_candidates, self.entries_per_candidate)
        if not isinstance(y, Tensor) or y.dim() < 2 or tuple(y.shape[-2:]) != ke:
            shape = _fmt(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"expected measurements with trailing shape {ke} (K, E), got {shape}")
        if y.is_complex() or not y.is_floating_point():
            raise TypeError(f"expected real floating-point measurements, got {y.dtype}")

    def _check_mask(self, mask: Tensor) -> Tensor:
        mask = torch.as_tensor(mask)
        if mask.dim() != 2 or mask.shape[1] != self.num_candidates:
            raise ValueError(f"expected mask of shape (B, {self.num_candidates}), got {_fmt(mask.shape)}")
        if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must be boolean (or hold only 0 and 1)")
        return mask.bool().clone()

    def _mask_for(self, lead: torch.Size, ref: Tensor) -> Tensor:
        """Mask broadcast to leading dims ``(B,)`` or ``(B, N)`` as ``[B, (1,) K, 1]`` in ref's dtype."""
        if len(lead) not in (1, 2) or lead[0] != self.batch_size:
            raise ValueError(
                f"expected leading dims (B,) or (B, N) with B = {self.batch_size} (the mask's batch), "
                f"got {_fmt(lead)}"
            )
        m = self.mask.to(device=ref.device, dtype=ref.dtype)
        return m[:, None, :, None] if len(lead) == 2 else m[:, :, None]

    def _expand_y(self, y: Tensor, lead: torch.Size) -> Tensor:
        """Measurements ``[B, K, E]`` or ``[*lead, K, E]`` broadcast to ``[*lead, K, E]``."""
        self._check_measurement(y)
        if tuple(y.shape[:-2]) == tuple(lead):
            return y
        if len(lead) == 2 and tuple(y.shape[:-2]) == (lead[0],):
            return y[:, None]
        raise ValueError(f"measurements {_fmt(y.shape)} do not match images with leading dims {_fmt(lead)}")

    def __repr__(self) -> str:
        n = int(self.mask.sum())
        return f"{type(self).__name__}(image_shape={self.image_shape}, mask=[{self.batch_size}, " \
               f"{self.num_candidates}] with {n} measured)"


@OPERATORS.register("pixel")
class PixelOperator(SubsamplingOperator):
    """Inpainting: candidates are the H*W pixels; each carries its C channel values (E = C)."""

    @property
    def num_candidates(self) -> int:
        return self.image_shape[1] * self.image_shape[2]

    @property
    def entries_per_candidate(self) -> int:
        return self.image_shape[0]

    def full(self, x: Tensor) -> Tensor:
        self._check_image(x)
        return x.flatten(-2).transpose(-1, -2)  # [..., C, H*W] -> [..., H*W, C]

    def full_adjoint(self, y: Tensor) -> Tensor:
        self._check_measurement(y)
        return y.transpose(-1, -2).unflatten(-1, self.image_shape[1:])

    def _to_layout(self, y: Tensor) -> Tensor:
        return self.full_adjoint(y)


@OPERATORS.register("column")
class ColumnOperator(SubsamplingOperator):
    """Column inpainting: candidates are the W image columns; each carries C*H values (E = C*H)."""

    @property
    def num_candidates(self) -> int:
        return self.image_shape[2]

    @property
    def entries_per_candidate(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def full(self, x: Tensor) -> Tensor:
        self._check_image(x)
        return x.movedim(-1, -3).flatten(-2)  # [..., C, H, W] -> [..., W, C, H] -> [..., W, C*H]

    def full_adjoint(self, y: Tensor) -> Tensor:
        self._check_measurement(y)
        return y.unflatten(-1, self.image_shape[:2]).movedim(-3, -1)

    def _to_layout(self, y: Tensor) -> Tensor:
        return self.full_adjoint(y)


@OPERATORS.register("kspace_line")
class KSpaceLineOperator(SubsamplingOperator):
    """Cartesian MRI: y = fft2c(complex image); candidates are the W phase-encoding lines.

    A candidate ``w`` is k-space column ``w`` (the last axis, the axis fastMRI masks act on); its
    ``E = 2H`` entries are the real parts of its H rows followed by their imaginary parts.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], batch_size: int = 1, mask: Tensor | None = None
    ) -> None:
        if len(image_shape) != 3 or int(image_shape[0]) != 2:
            raise ValueError(
                f"KSpaceLineOperator needs a complex image stored as 2 channels, image_shape (2, H, W); "
                f"got {image_shape!r}"
            )
        super().__init__(image_shape, batch_size=batch_size, mask=mask)

    @property
    def num_candidates(self) -> int:
        return self.image_shape[2]

    @property
    def entries_per_candidate(self) -> int:
        return 2 * self.image_shape[1]

    def kspace(self, x: Tensor) -> Tensor:
        """Centred orthonormal FFT on the channel layout: ``[..., 2, H, W] -> [..., 2, H, W]``."""
        self._check_image(x)
        return fastmri.fft2c(x.movedim(-3, -1).contiguous()).movedim(-1, -3)

    def image(self, k: Tensor) -> Tensor:
        """Centred orthonormal inverse FFT: k-space ``[..., 2, H, W] -> image [..., 2, H, W]``."""
        self._check_image(k)
        return fastmri.ifft2c(k.movedim(-3, -1).contiguous()).movedim(-1, -3)

    def full(self, x: Tensor) -> Tensor:
        return self.kspace(x).movedim(-1, -3).flatten(-2)  # [..., 2, H, W] -> [..., W, 2*H]

    def full_adjoint(self, y: Tensor) -> Tensor:
        return self.image(self._to_layout(y))

    def _to_layout(self, y: Tensor) -> Tensor:
        self._check_measurement(y)
        return y.unflatten(-1, self.image_shape[:2]).movedim(-3, -1)  # [..., W, 2, H] -> [..., 2, H, W]


def make_operator(
    name: str, image_shape: tuple[int, int, int], batch_size: int = 1
) -> SubsamplingOperator:
    """Build a registered operator by name ("pixel", "column", "kspace_line") with an empty mask."""
    return OPERATORS.get(name)(image_shape, batch_size=batch_size)


class MeasurementOracle:
    """Holds the ground truth and answers measurement requests; the only object that reads it.

    Every read is recorded so that callers (and tests) can prove the target was seen only at the
    acquired candidates: ``requests`` lists the ``indices [B]`` of each ``measure`` call,
    ``mask_requests`` the ``mask [B, K]`` of each ``measure_mask`` call, and ``read_mask()`` is the
    union of everything ever read.

    Args:
        target: ground-truth images ``[B, C, H, W]``.
        operator: the operator whose candidates are requested (its mask is not used or changed).
    """

    def __init__(self, target: Tensor, operator: SubsamplingOperator) -> None:
        operator._check_image(target)
        if target.dim() != 4:
            raise ValueError(f"expected target of shape (B, *{operator.image_shape}), got {_fmt(target.shape)}")
        bad = int((~torch.isfinite(target)).sum())
        if bad:
            raise ValueError(f"the target holds {bad} NaN or inf value(s); measurements of it would be meaningless")
        self.operator = operator
        self._full = operator.full(target.detach())  # [B, K, E]
        self._read = torch.zeros(self._full.shape[:2], dtype=torch.bool, device=target.device)
        self.requests: list[Tensor] = []
        self.mask_requests: list[Tensor] = []

    @property
    def batch_size(self) -> int:
        return int(self._full.shape[0])

    def measure(self, indices: Tensor) -> Tensor:
        """Read candidate ``indices[b]`` of target ``b``: ``LongTensor [B] -> Y entries [B, E]``."""
        idx = torch.as_tensor(indices, device=self._full.device)
        k = self._full.shape[1]
        if idx.shape != (self.batch_size,) or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor of shape ({self.batch_size},), got "
                             f"{idx.dtype} {_fmt(idx.shape)}")
        idx = idx.long()
        if bool(((idx < 0) | (idx >= k)).any()):
            raise ValueError(f"candidate index out of range [0, {k}): {idx.tolist()}")
        rows = torch.arange(self.batch_size, device=idx.device)
        self.requests.append(idx.clone())
        self._read[rows, idx] = True
        return self._full[rows, idx].clone()

    def measure_mask(self, mask: Tensor) -> Tensor:
        """Read every candidate in ``mask [B, K]``: returns ``Y [B, K, E]``, zeros elsewhere."""
        m = torch.as_tensor(mask, device=self._full.device)
        if tuple(m.shape) != tuple(self._full.shape[:2]):
            raise ValueError(f"expected mask of shape {_fmt(self._full.shape[:2])}, got {_fmt(m.shape)}")
        m = m.bool()
        self.mask_requests.append(m.clone())
        self._read |= m
        return self._full * m[..., None].to(self._full.dtype)

    def read_mask(self) -> Tensor:
        """``BoolTensor [B, K]``: every candidate ever read, by either method."""
        return self._read.clone()
