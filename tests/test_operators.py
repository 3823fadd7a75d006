"""Tests for gendiff.operators: unitarity, adjointness, data consistency, fastMRI conventions, oracle."""

from __future__ import annotations

import fastmri
import numpy as np
import pytest
import torch
from fastmri.data.subsample import EquispacedMaskFractionFunc, RandomMaskFunc
from fastmri.data.transforms import apply_mask

from gendiff.operators import (
    OPERATORS,
    ColumnOperator,
    KSpaceLineOperator,
    MeasurementOracle,
    PixelOperator,
    make_operator,
)

SHAPES = {"pixel": (3, 5, 6), "column": (2, 5, 6), "kspace_line": (2, 6, 8)}
KINDS = sorted(SHAPES)


def _op(kind: str, batch: int = 2, seed: int = 0, frac: float = 0.4):
    op = make_operator(kind, SHAPES[kind], batch_size=batch)
    g = torch.Generator().manual_seed(seed)
    return op.with_mask(torch.rand(batch, op.num_candidates, generator=g) < frac)


def _rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry_names():
    assert OPERATORS.names() == ["column", "kspace_line", "pixel"]
    with pytest.raises(KeyError, match="valid names"):
        make_operator("radial", (2, 4, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_full_is_unitary(kind):
    op = _op(kind)
    x = _rand(2, 3, *SHAPES[kind])
    y = op.full(x)
    assert y.shape == (2, 3, op.num_candidates, op.entries_per_candidate)
    assert op.num_candidates * op.entries_per_candidate == np.prod(SHAPES[kind])
    torch.testing.assert_close(op.full_adjoint(y), x)
    # <full x, Y> == <x, full_adjoint Y>, and norms are preserved
    big_y = _rand(*y.shape, seed=2)
    torch.testing.assert_close((y * big_y).sum(), (x * op.full_adjoint(big_y)).sum())
    torch.testing.assert_close(y.norm(), x.norm())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("particles", [False, True])
def test_forward_adjoint_with_mask(kind, particles):
    op = _op(kind)
    lead = (2, 3) if particles else (2,)
    x = _rand(*lead, *SHAPES[kind])
    y = _rand(*lead, op.num_candidates, op.entries_per_candidate, seed=3)
    ax = op.forward(x)
    torch.testing.assert_close((ax * y).sum(), (x * op.adjoint(y)).sum())
    # unmeasured candidates are exactly zero, measured ones equal the full measurement
    m = op.mask if not particles else op.mask[:, None].expand(2, 3, -1)
    assert torch.all(ax[~m] == 0)
    torch.testing.assert_close(ax[m], op.full(x)[m])
    # a slow reference: per-candidate loop
    ref = torch.zeros_like(ax)
    full = op.full(x)
    for b in range(2):
        for k in range(op.num_candidates):
            if op.mask[b, k]:
                ref[b, ..., k, :] = full[b, ..., k, :]
    torch.testing.assert_close(ax, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_project_idempotent_and_consistent(kind):
    op = _op(kind)
    x = _rand(2, 4, *SHAPES[kind])
    truth = _rand(2, *SHAPES[kind], seed=5)
    y = op.forward(truth)  # [B, K, E], shared by the 4 particles
    p = op.project(x, y)
    assert p.shape == x.shape
    torch.testing.assert_close(op.forward(p), y[:, None].expand_as(op.forward(p)))
    torch.testing.assert_close(op.project(p, y), p)
    # unmeasured part of x is untouched
    m = op.mask[:, None, :, None]
    torch.testing.assert_close(op.full(p) * ~m, op.full(x) * ~m)
    assert torch.all(op.residual_norm(p, y) < 1e-10)
    # residual norm of x equals a direct computation
    r = ((y[:, None] - op.full(x)) * m).flatten(2).norm(dim=-1)
    torch.testing.assert_close(op.residual_norm(x, y), r)
    assert op.residual_norm(x, y).shape == (2, 4)


def test_kspace_operator_matches_fastmri_fft2c():
    op = KSpaceLineOperator((2, 6, 8))
    x = _rand(3, 2, 6, 8)
    k = fastmri.fft2c(x.permute(0, 2, 3, 1).contiguous())  # [3, H, W, 2]
    y = op.full(x)  # [3, W, 2H]
    for w in range(8):
        torch.testing.assert_close(y[:, w, :6], k[:, :, w, 0])
        torch.testing.assert_close(y[:, w, 6:], k[:, :, w, 1])
    # complex identity: full_adjoint is ifft2c
    xc = torch.view_as_complex(x.permute(0, 2, 3, 1).contiguous())
    ifft = torch.fft.ifftshift(xc, dim=(-2, -1))
    ref = torch.fft.fftshift(torch.fft.fft2(ifft, norm="ortho"), dim=(-2, -1))
    torch.testing.assert_close(torch.view_as_real(ref), k)


@pytest.mark.parametrize("mask_func", [
    EquispacedMaskFractionFunc([0.08], [4], seed=0),
    RandomMaskFunc([0.08], [4], seed=1),
])
def test_kspace_mask_matches_fastmri_apply_mask(mask_func):
    h, w = 16, 32
    x = _rand(1, 2, h, w).float()
    op = KSpaceLineOperator((2, h, w))
    kspace = fastmri.fft2c(x[0].permute(1, 2, 0).contiguous())  # [H, W, 2]
    masked, fm_mask, _ = apply_mask(kspace, mask_func, seed=123)
    cols = fm_mask.reshape(-1).bool()  # [W]
    assert 0 < int(cols.sum()) < w
    op = op.with_mask(cols[None])
    ours = op.forward(x)  # [1, W, 2H]
    torch.testing.assert_close(op._to_layout(ours)[0].permute(1, 2, 0), masked)
    # zero-filled reconstructions agree too
    torch.testing.assert_close(op.adjoint(ours)[0].permute(1, 2, 0), fastmri.ifft2c(masked))
    # and the mask image equals the fastMRI mask broadcast over rows
    torch.testing.assert_close(op.mask_image()[0, 0], cols.float().expand(h, w))


def test_mask_images():
    px = PixelOperator((1, 3, 4), batch_size=1)
    px.acquire(torch.tensor([5]))  # row 1, column 1
    img = px.mask_image()
    assert img.shape == (1, 1, 3, 4) and img.sum() == 1 and img[0, 0, 1, 1] == 1
    col = ColumnOperator((2, 3, 4), batch_size=2)
    col.acquire(torch.tensor([0, 3]))
    img = col.mask_image()
    assert img.shape == (2, 1, 3, 4)
    assert torch.all(img[0, 0, :, 0] == 1) and torch.all(img[1, 0, :, 3] == 1) and img.sum() == 6


def test_acquire_and_reset():
    op = KSpaceLineOperator((2, 4, 8), batch_size=2)
    op.acquire(torch.tensor([3, 4]))
    op.acquire(torch.tensor([0, 3]))
    assert op.mask.sum() == 4 and op.mask[0, 3] and op.mask[1, 3]
    with pytest.raises(ValueError, match="already measured"):
        op.acquire(torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="out of range"):
        op.acquire(torch.tensor([8, 1]))
    with pytest.raises(ValueError, match="out of range"):
        op.acquire(torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match="shape"):
        op.acquire(torch.tensor([1, 2, 5]))
    with pytest.raises(ValueError, match="integer"):
        op.acquire(torch.tensor([1.0, 2.0]))
    assert op.mask.sum() == 4  # failed calls changed nothing
    user = torch.zeros(2, 8, dtype=torch.bool)
    op2 = op.with_mask(user)
    op2.acquire(torch.tensor([1, 1]))
    assert not user.any()  # with_mask copies
    op.reset(3)
    assert op.mask.shape == (3, 8) and not op.mask.any()


def test_bad_shapes_raise_clear_errors():
    op = KSpaceLineOperator((2, 64, 64), batch_size=2)
    with pytest.raises(ValueError, match=r"expected x with trailing shape \(2, 64, 64\), got \(2, 1, 64, 64\)"):
        op.forward(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="leading dims"):
        op.forward(torch.zeros(3, 2, 64, 64))
    with pytest.raises(ValueError, match="leading dims"):
        op.forward(torch.zeros(2, 1, 1, 2, 64, 64))
    with pytest.raises(ValueError, match=r"trailing shape \(64, 128\)"):
        op.adjoint(torch.zeros(2, 64, 64))
    with pytest.raises(ValueError, match="do not match"):
        op.project(torch.zeros(2, 3, 2, 64, 64), torch.zeros(3, 64, 128))
    with pytest.raises(TypeError, match="real floating-point"):
        op.forward(torch.zeros(2, 2, 64, 64, dtype=torch.complex64))
    with pytest.raises(TypeError, match="real floating-point"):
        op.forward(torch.zeros(2, 2, 64, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="2 channels"):
        KSpaceLineOperator((1, 64, 64))
    with pytest.raises(ValueError, match=r"mask of shape \(B, 64\)"):
        op.with_mask(torch.zeros(2, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="image_shape"):
        PixelOperator((4, 4))


def test_oracle_refuses_a_target_with_nan_or_inf():
    target = _rand(1, 2, 8, 8)
    target[0, 1, 3, 4] = float("nan")
    target[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="2 NaN or inf"):
        MeasurementOracle(target, KSpaceLineOperator((2, 8, 8)))


def test_oracle_records_every_read():
    op = ColumnOperator((2, 4, 6), batch_size=2)
    target = _rand(2, 2, 4, 6)
    oracle = MeasurementOracle(target, op)
    assert not oracle.read_mask().any()
    e = oracle.measure(torch.tensor([1, 5]))
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], target[0, :, :, 1].reshape(-1))
    torch.testing.assert_close(e[1], target[1, :, :, 5].reshape(-1))
    m = torch.zeros(2, 6, dtype=torch.bool)
    m[0, 2] = True
    y = oracle.measure_mask(m)
    torch.testing.assert_close(y, op.with_mask(m).forward(target))
    assert [r.tolist() for r in oracle.requests] == [[1, 5]]
    assert len(oracle.mask_requests) == 1 and torch.equal(oracle.mask_requests[0], m)
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[0, [1, 2]] = True
    expected[1, 5] = True
    assert torch.equal(oracle.read_mask(), expected)
    # acquiring through the operator and measuring through the oracle build the same y
    op.acquire(torch.tensor([1, 5]))
    op.acquire(torch.tensor([2, 0]))
    oracle.measure(torch.tensor([2, 0]))
    torch.testing.assert_close(oracle.measure_mask(op.mask), op.forward(target))
    with pytest.raises(ValueError, match="out of range"):
        oracle.measure(torch.tensor([6, 0]))
    with pytest.raises(ValueError, match="mask of shape"):
        oracle.measure_mask(torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="trailing shape"):
        MeasurementOracle(target[:, :1], op)
