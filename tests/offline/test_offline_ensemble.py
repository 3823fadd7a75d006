"""The batched twin critic (EnsembleQ) equals two separate critics; PRDC's two neighbour searches agree."""

from __future__ import annotations

import pytest
import torch

from gendiff.offline.ensemble import EnsembleMLP, EnsembleQ
from gendiff.offline.learners import build_learner
from gendiff.offline.prdc import PRDCConfig
from gendiff.rl.sac import TwinQ


def _twins(obs_dim: int = 5, act_dim: int = 3, hidden: tuple[int, ...] = (32, 16)) -> tuple[TwinQ, EnsembleQ]:
    torch.manual_seed(0)
    twin = TwinQ(obs_dim, act_dim, hidden).double()
    ens = EnsembleQ(obs_dim, act_dim, hidden, members=2).double()
    ens.net.load_members([twin.q1, twin.q2])
    return twin, ens


def test_ensemble_q_equals_two_separate_critics_forward_and_gradients():
    twin, ens = _twins()
    g = torch.Generator().manual_seed(1)
    obs, act = torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    y = torch.randn(64, generator=g, dtype=torch.float64)
    q_twin, q_ens = twin(obs, act), ens(obs, act)
    assert q_ens.shape == (2, 64)
    torch.testing.assert_close(q_ens, q_twin, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ens(torch.cat([obs, act], 1)), q_twin, rtol=1e-12, atol=1e-12)  # packed [s, a] input
    # the critics' TD loss: gradients of every weight and bias of both members
    for q in (q_twin, q_ens):
        (q - y).square().mean(1).sum().backward()
    for k, net in enumerate((twin.q1, twin.q2)):
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        for w, b, lin in zip(ens.net.weights, ens.net.biases, linears):
            torch.testing.assert_close(w.grad[k], lin.weight.grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(b.grad[k, 0], lin.bias.grad, rtol=1e-10, atol=1e-12)


def test_single_frozen_member_gives_the_input_gradient_of_q1_only():
    """TD3+BC's actor loss: Q_1(s, pi) with the critic frozen; gradients reach the action, not the critic."""
    twin, ens = _twins()
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(16, 5, generator=g, dtype=torch.float64)
    a1 = torch.randn(16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    a2 = a1.detach().clone().requires_grad_(True)
    twin.requires_grad_(False)
    q_ref = twin(obs, a1)[0]
    q = ens(obs, a2, member=0, frozen=True)
    torch.testing.assert_close(q, q_ref, rtol=1e-12, atol=1e-12)
    q_ref.sum().backward()
    q.sum().backward()
    torch.testing.assert_close(a2.grad, a1.grad, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in ens.parameters())


def test_per_member_inputs_and_accumulated_gradients():
    """[E, B, in] inputs (one slice per member) and two backward passes accumulating, as autograd would."""
    twin, ens = _twins()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 8, generator=g, dtype=torch.float64)
    q = ens.net(x).squeeze(-1)
    torch.testing.assert_close(q, torch.stack([twin.q1(x[0]), twin.q2(x[1])]).squeeze(-1), rtol=1e-12, atol=1e-12)
    for _ in range(2):
        ens.net(x).square().sum().backward()
        twin.q1(x[0]).square().sum().backward()
        twin.q2(x[1]).square().sum().backward()
    torch.testing.assert_close(ens.net.weights[0].grad[1], twin.q2[0].weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ens.net.biases[2].grad[0, 0], twin.q1[4].bias.grad, rtol=1e-10, atol=1e-12)


def test_ensemble_init_matches_nn_linear_bounds_and_rejects_bad_sizes():
    torch.manual_seed(0)
    net = EnsembleMLP(7, 1, (64, 64), members=3)
    for w, b in zip(net.weights, net.biases):
        bound = w.shape[2] ** -0.5  # [E, out, in]: fan_in = in
        assert w.abs().max() <= bound and b.abs().max() <= bound
        assert w.std() > 0.4 * bound  # U(-c, c) has std c / sqrt(3) ~ 0.58 c
    assert not torch.equal(net.weights[0][0], net.weights[0][1])  # members are independent draws
    with pytest.raises(ValueError, match="member"):
        EnsembleMLP(7, 1, (64,), members=0)
    with pytest.raises(ValueError, match="networks"):
        net.load_members([])


def test_prdc_brute_force_and_kdtree_find_the_same_neighbours():
    g = torch.Generator().manual_seed(0)
    data = {"obs": torch.randn(3000, 4, generator=g), "act": torch.rand(3000, 2, generator=g) * 2 - 1,
            "rew": torch.zeros(3000), "next_obs": torch.randn(3000, 4, generator=g), "done": torch.zeros(3000)}
    agents = {b: build_learner("prdc", data, [-1, -1], [1, 1], PRDCConfig(hidden=(16,), nn_backend=b, brute_block=700))
              for b in ("kdtree", "brute")}
    query = torch.cat([torch.randn(200, 4, generator=g) * 2, torch.rand(200, 2, generator=g) * 2 - 1], 1)
    idx = {b: a.nearest(query) for b, a in agents.items()}
    assert torch.equal(idx["kdtree"], idx["brute"])
    d_best = torch.cdist(query.double(), agents["brute"].keys.double()).min(1).values
    torch.testing.assert_close((query - agents["brute"].keys[idx["brute"]]).norm(dim=1).double(), d_best,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="nn_backend"):
        PRDCConfig(nn_backend="ball")
