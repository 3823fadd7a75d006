"""Batched ensembles of MLPs: E independent ReLU networks evaluated as one stack of batched matrix products.

The twin critics of TD3+BC / PRDC / IQL are E = 2 MLPs of the same shape. Their weights are stacked,
W_l [E, out, in] (``nn.Linear``'s layout per member) and b_l [E, 1, out], so that the two networks' 2 x L
matrix products become L batched ones (``torch.baddbmm``), and their optimiser and target (Polyak) updates
one tensor per layer.

Backpropagation is written out (:class:`_EnsembleMLPFunction`) instead of recorded op by op by autograd:
for layer l with input h_{l-1} and upstream gradient g_l = dL/d(pre-activation of layer l),

    dL/dW_l = g_l^T h_{l-1},   dL/db_l = sum_B g_l,   g_{l-1} = (g_l W_l) * 1[h_{l-1} > 0],

with only the gradients autograd asks for (a frozen critic gives the action gradient alone). This is the
same arithmetic as autograd's ``addmm`` / ``relu`` backward, in 3 batched products per layer, without
autograd's per-op bookkeeping; the weights' layout keeps every product, the width-1 output layer's included,
in a form the BLAS runs fast. On one CPU thread a twin critic's forward + backward (batch 256, 256x2) takes
10-20 % less time than two ``nn.Linear`` stacks (benchmarks/offline/README.md); a single network (E = 1)
gains nothing, so actors and value networks stay plain :func:`gendiff.rl.common.mlp`.
``tests/offline/test_offline_ensemble.py`` checks values and gradients against separate ``mlp`` networks.
The code is device-agnostic (CPU and CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class _EnsembleMLPFunction(torch.autograd.Function):
    """y = MLP_E(x) with ReLU hidden layers; inputs (x, W_1..W_L, b_1..b_L); see the module docstring."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, *params: Tensor) -> Tensor:
        n = len(params) // 2
        weights, biases = params[:n], params[n:]
        h = x.expand(weights[0].shape[0], *x.shape) if x.dim() == 2 else x  # shared input: [B, in] -> [E, B, in]
        hidden = []
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w.transpose(1, 2))  # [E, B, in] @ [E, in, out] + [E, 1, out]
            if i < n - 1:
                h = h.relu_()
                hidden.append(h)
        ctx.shared = x.dim() == 2
        ctx.save_for_backward(x, *hidden, *weights)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, *saved = ctx.saved_tensors
        n = (len(saved) + 1) // 2
        hidden, weights = saved[:n - 1], saved[n - 1:]
        inputs = [x.expand(weights[0].shape[0], *x.shape) if ctx.shared else x, *hidden]
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1:1 + n], ctx.needs_input_grad[1 + n:]
        grad_w: list[Tensor | None] = [None] * n
        grad_b: list[Tensor | None] = [None] * n
        grad_x = None
        g = grad
        for i in reversed(range(n)):
            if need_w[i]:
                grad_w[i] = torch.bmm(g.transpose(1, 2), inputs[i])  # [E, out, B] @ [E, B, in]
            if need_b[i]:
                grad_b[i] = g.sum(1, keepdim=True)
            if i > 0:  # through W_i, then ReLU's gate (its output is 0 exactly where it was inactive)
                g = torch.bmm(g, weights[i])
                g = torch.ops.aten.threshold_backward.grad_input(g, inputs[i], 0, grad_input=g)  # in place
            elif need_x:
                grad_x = torch.bmm(g, weights[0])
                grad_x = grad_x.sum(0) if ctx.shared else grad_x
        return (grad_x, *grad_w, *grad_b)


class EnsembleMLP(nn.Module):
    """E MLPs with ReLU hidden layers: [B, in_dim] (shared) or [E, B, in_dim] -> [E, B, out_dim].

    Initialisation is member-wise that of ``nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
    biases), so each member is distributed exactly as one :func:`gendiff.rl.common.mlp`.

    Args:
        in_dim, out_dim: sizes; hidden: widths of the hidden layers; members: E.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256), members: int = 2) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs >= 1 member, got {members}")
        dims = [in_dim, *hidden, out_dim]
        self.members, self.in_dim, self.out_dim = members, in_dim, out_dim
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            self.register_parameter(f"weight_{i}", nn.Parameter(torch.empty(members, d_out, d_in)))
        for i, d_out in enumerate(dims[1:]):
            self.register_parameter(f"bias_{i}", nn.Parameter(torch.empty(members, 1, d_out)))
        self._names = tuple(self._parameters)  # weight_0..weight_{L-1}, bias_0..bias_{L-1}
        self.reset_parameters()

    @property
    def weights(self) -> tuple[nn.Parameter, ...]:
        """W_l [E, out, in] for each layer."""
        return tuple(self._parameters[n] for n in self._names[:len(self._names) // 2])

    @property
    def biases(self) -> tuple[nn.Parameter, ...]:
        """b_l [E, 1, out] for each layer."""
        return tuple(self._parameters[n] for n in self._names[len(self._names) // 2:])

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[2])
            w.uniform_(-bound, bound)  # nn.Linear's kaiming_uniform(a=sqrt(5)) has this same bound
            b.uniform_(-bound, bound)

    @torch.no_grad()
    def load_members(self, nets: Sequence[nn.Sequential]) -> EnsembleMLP:
        """Copy E separate ``mlp`` networks (Linear/ReLU stacks of the same shape) into the stack; returns self."""
        if len(nets) != self.members:
            raise ValueError(f"need {self.members} networks, got {len(nets)}")
        for k, net in enumerate(nets):
            linears = [m for m in net if isinstance(m, nn.Linear)]
            if len(linears) != len(self.weights):
                raise ValueError(f"network {k} has {len(linears)} linear layers, the ensemble {len(self.weights)}")
            for w, b, lin in zip(self.weights, self.biases, linears):
                w[k].copy_(lin.weight)
                b[k, 0].copy_(lin.bias)
        return self

    def forward(self, x: Tensor, member: int | None = None, frozen: bool = False) -> Tensor:
        """Evaluate all members ([E, B, out_dim]) or one (``member=k``: [B, out_dim]).

        Args:
            x: [B, in_dim] fed to every member, or [E, B, in_dim] one slice per member (all members only).
            member: evaluate only this member (TD3+BC's actor loss uses Q_1 alone).
            frozen: use detached weights: gradients flow to ``x`` only (an actor's loss through a critic).
        """
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"input must end in {self.in_dim} features, got shape {tuple(x.shape)}")
        params = [self._parameters[n] for n in self._names]  # (a dict lookup: this runs several times an update)
        if member is not None and self.members > 1:
            params = [p[member:member + 1] for p in params]
        if frozen:
            params = [p.detach() for p in params]
        y = _EnsembleMLPFunction.apply(x, *params)
        return y[0] if member is not None else y


class EnsembleQ(nn.Module):
    """E critics Q_k(s, a) = MLP_k([s, a]): ([B, obs_dim], [B, act_dim]) -> [E, B] (TwinQ's contract).

    Args:
        obs_dim, act_dim: sizes; hidden: MLP widths; members: E (2 for the clipped double-Q target).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), members: int = 2) -> None:
        super().__init__()
        self.net = EnsembleMLP(obs_dim + act_dim, 1, hidden, members)

    def forward(self, obs: Tensor, act: Tensor | None = None, member: int | None = None,
                frozen: bool = False) -> Tensor:
        """Q values [E, B] (or [B] for one ``member``). ``act=None``: ``obs`` already holds [s, a] [B, obs+act]."""
        x = obs if act is None else torch.cat([obs, act], dim=-1)
        return self.net(x, member, frozen).squeeze(-1)

