"""Policy-guided trajectory diffusion (PGD; Jackson et al. 2024) as a diffusers pipeline.

The pipeline samples z-scored windows [B, H, obs + act + 2] of [obs, arctanh action, reward, done] with a
temporal U-Net (any length H divisible by the U-Net's ``horizon_multiple``) through
:class:`gendiff.sampler.GuidedSampler`. With a target policy, each reverse step i shifts only the action slice:

    a <- a + lambda_i * grad_a log pi(tanh(unnorm(a)) | unnorm(s))                 (PGD, Sec. 4)
    lambda_i = coeff [(1 - i/N) + cosine_coeff sin(pi (i + 1) / N)], 0 on the last step (PGDSchedule)

(:class:`gendiff.guidance.LogProbGuidance` on the action slice; optional g / (||g|| + eps)). As in the reference
sampler, the shift moves x_i before the denoiser call of step i, once per step (``guidance_kind="shift"``);
``"direction"`` keeps gendiff's earlier placement (added after ``scheduler.step``, at every Heun stage) for
comparison. Any policy with
``log_prob(obs [M, obs_dim], action [M, act_dim]) -> [M]`` in environment units works; a deterministic actor
``pi(obs) -> action`` is treated as N(pi(s), I). Outputs are windows and transitions for a replay buffer.

Sampler: the pipeline is saved with the scheduler it was trained with (EDMEulerScheduler; ``s_churn`` adds
diffusers' first-order churn). The reference samples with EDM's stochastic Heun sampler (Algorithm 2); use
the same weights with :class:`gendiff.schedulers.EDMHeunScheduler`, whose churn lives in its config:

    heun = pipe.with_scheduler(EDMHeunScheduler.from_config(pipe.scheduler.config, s_churn=80, s_tmin=0.05,
                                                            s_tmax=50, s_noise=1.003))
    # or gendiff.offline.diffusion.edm_heun_scheduler(pipe.scheduler); then heun(..., num_inference_steps=256)

It makes 2 network calls per step but the last; the guidance shift acts once per step, before the first.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import diffusers
import torch
from diffusers import DiffusionPipeline
from torch import Tensor

from gendiff import schedulers as gendiff_schedulers
from gendiff.entropy import gaussian_log_prob
from gendiff.guidance import (
    GUIDANCE,
    GuidanceState,
    GuidanceTerm,
    LogProbGuidance,
    PGDSchedule,
    as_guidance_terms,
)
from gendiff.models import TemporalUNet1D
from gendiff.sampler import GuidedSampler
from gendiff.trajectory_layout import TrajectoryNormalizer, windows_to_transitions

PolicyType = Literal["auto", "stochastic", "deterministic"]
GuidanceKind = Literal["shift", "direction"]


@dataclass
class PGDOutput:
    """Result of :class:`PolicyGuidedTrajectoryPipeline`.

    Attributes:
        windows: [B, H, D] generated windows in data units (pre-tanh actions, as trained).
        transitions: obs / next_obs [K, obs_dim], act [K, act_dim] (environment units), rew / done [K].
        policy_log_prob: mean log pi(a|s) of the generated transitions under the target policy (or None).
        nfe: network evaluations per sample.
    """

    windows: Tensor
    transitions: dict[str, Tensor] = field(default_factory=dict)
    policy_log_prob: float | None = None
    nfe: int = 0


def policy_log_prob_fn(policy: Any, policy_type: PolicyType = "auto") -> Callable[[Tensor, Tensor], Tensor]:
    """(obs [M, obs_dim], action [M, act_dim]) -> log pi [M]; a deterministic actor is N(pi(s), I)."""
    if policy_type == "auto":
        policy_type = "stochastic" if hasattr(policy, "log_prob") else "deterministic"
    if policy_type == "stochastic":
        if not hasattr(policy, "log_prob"):
            raise TypeError(f"{type(policy).__name__} has no log_prob(obs, action); pass policy_type='deterministic'")
        return policy.log_prob
    if not callable(policy):
        raise TypeError(f"a deterministic policy must be callable as pi(obs) -> action, got {type(policy).__name__}")
    return lambda obs, act: gaussian_log_prob(act, policy(obs), torch.zeros_like(act))


class PolicyGuidedTrajectoryPipeline(DiffusionPipeline):
    """Unguided and policy-guided generation of trajectory windows.

    Args:
        unet: :class:`gendiff.models.TemporalUNet1D` trained on z-scored windows.
        scheduler: a diffusers-contract scheduler (EDMEulerScheduler as trained; see :meth:`with_scheduler`).
        normalizer: :meth:`gendiff.trajectory_layout.TrajectoryNormalizer.to_config` of the training data.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: TemporalUNet1D, scheduler: Any, normalizer: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(normalizer=normalizer)

    @property
    def normalizer(self) -> TrajectoryNormalizer:
        if self.config.normalizer is None:
            raise ValueError("this pipeline has no normalizer (build it with normalizer=TrajectoryNormalizer.to_config())")
        return TrajectoryNormalizer.from_config(self.config.normalizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> PolicyGuidedTrajectoryPipeline:  # type: ignore[override]
        """Load a folder written by ``save_pretrained`` (unet/, scheduler/, model_index.json)."""
        path = Path(path)
        index = path / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{path} is not a saved PolicyGuidedTrajectoryPipeline (no model_index.json)")
        cfg = json.loads(index.read_text())
        name = cfg["scheduler"][1]
        sched_cls = getattr(diffusers, name, None) or getattr(gendiff_schedulers, name, None)
        if sched_cls is None:
            raise ValueError(f"unknown scheduler class {cfg['scheduler'][1]!r} in {index}")
        unet = TemporalUNet1D.from_pretrained(path / "unet", **kwargs)
        return cls(unet=unet, scheduler=sched_cls.from_pretrained(path / "scheduler"), normalizer=cfg.get("normalizer"))

    def with_scheduler(self, scheduler: Any) -> PolicyGuidedTrajectoryPipeline:
        """A pipeline sharing this one's U-Net and normalizer that samples with ``scheduler`` (this one is kept).

        E.g. the reference sampler: ``pipe.with_scheduler(EDMHeunScheduler.from_config(pipe.scheduler.config,
        s_churn=80, s_tmin=0.05, s_tmax=50, s_noise=1.003))``; saving the result saves that scheduler.
        """
        return type(self)(unet=self.unet, scheduler=scheduler, normalizer=self.config.normalizer)

    def _guidance(self, guidance: str | Sequence[GuidanceTerm], policy: Any, policy_type: PolicyType, coeff: float,
                  cosine_coeff: float, normalize: bool, kind: GuidanceKind) -> list[GuidanceTerm]:
        """Ready-made terms as given, or the GUIDANCE registry's log-probability term ``guidance`` built around the
        target policy with PGD's schedule (none without a policy or at coefficient 0)."""
        if not isinstance(guidance, str):
            return as_guidance_terms(guidance)
        cls = GUIDANCE.get(guidance)  # an unknown name raises KeyError listing the registered ones
        if not issubclass(cls, LogProbGuidance):
            raise ValueError(f"PGD guides with a policy's log-probability; {guidance!r} is not a log-probability term "
                             "(build the terms yourself and pass guidance=[term, ...])")
        if policy is None or coeff == 0.0:
            return []
        norm, log_pi = self.normalizer, policy_log_prob_fn(policy, policy_type)

        def log_prob(x: Tensor, state: GuidanceState) -> Tensor:  # x [B, N, H, D] z-scored
            u = norm.unnormalize(x)
            obs = u[..., norm.obs_slice].reshape(-1, norm.obs_dim)
            act = norm.to_env_action(u[..., norm.act_slice]).reshape(-1, norm.act_dim)
            return log_pi(obs, act).view(*x.shape[:3]).sum(-1)

        return [cls(log_prob, norm.act_slice, PGDSchedule(coeff, cosine_coeff), "x_t", normalize, kind=kind)]

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        horizon: int = 32,
        num_inference_steps: int = 128,
        policy: Any = None,
        guidance_scale: float = 0.0,
        guidance: str | Sequence[GuidanceTerm] = "log_prob",
        cosine_coeff: float = 0.3,
        normalize_grad: bool = False,
        guidance_kind: GuidanceKind = "shift",
        policy_type: PolicyType = "auto",
        s_churn: float = 0.0,
        generator: torch.Generator | None = None,
        latents: Tensor | None = None,
        progress: bool = False,
    ) -> PGDOutput:
        """Generate ``batch_size`` windows of length ``horizon``.

        Args:
            policy: target policy (``log_prob`` or a deterministic actor); None or guidance_scale 0: unguided.
            guidance_scale: PGD's coeff; cosine_coeff: its cosine term; normalize_grad: g / (||g|| + eps).
            guidance: the GUIDANCE registry's name of the policy term ("log_prob"), or a list of GuidanceTerm
                objects used as they are (each with its own scale; policy and guidance_scale then only report
                ``policy_log_prob``).
            guidance_kind: "shift" (the reference: x_i moved before the denoiser call, once per step) or
                "direction" (gendiff's earlier placement: added after every scheduler stage).
            s_churn: EDM stochastic churn (80 in the reference, with s_tmin 0.05, s_tmax 50, s_noise 1.003)
                for schedulers whose ``step`` takes it (EDMEulerScheduler); EDMHeunScheduler takes it from
                its config instead (:meth:`with_scheduler`).
            latents: [batch_size, 1, horizon, D] initial noise.
        """
        norm = self.normalizer
        if horizon % self.unet.horizon_multiple:
            raise ValueError(f"horizon {horizon} must be a multiple of {self.unet.horizon_multiple} for this U-Net")
        if s_churn and "s_churn" not in inspect.signature(self.scheduler.step).parameters:
            raise ValueError(f"s_churn is not a step argument of {type(self.scheduler).__name__}; set the churn "
                             "in the scheduler's config (EDMHeunScheduler(s_churn=...)) and leave s_churn=0")
        step_kwargs = {"s_churn": s_churn, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003} if s_churn else {}
        terms = self._guidance(guidance, policy, policy_type, guidance_scale, cosine_coeff, normalize_grad, guidance_kind)
        sampler = GuidedSampler(self.unet, self.scheduler, terms, step_kwargs=step_kwargs)
        out = sampler((horizon, norm.dim), batch_size, 1, num_inference_steps, generator=generator,
                      latents=latents, progress=progress)
        windows = norm.unnormalize(out.sample[:, 0])
        trans = windows_to_transitions(windows, norm)
        lp = None
        if policy is not None and len(trans["obs"]):
            lp = float(policy_log_prob_fn(policy, policy_type)(trans["obs"], trans["act"]).mean())
        return PGDOutput(windows, trans, lp, out.nfe)
