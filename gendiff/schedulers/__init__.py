"""Schedulers that diffusers does not ship, written to the diffusers scheduler contract."""

from __future__ import annotations

from gendiff.schedulers.edm_heun import EDMHeunScheduler, EDMHeunSchedulerOutput

__all__ = ["EDMHeunScheduler", "EDMHeunSchedulerOutput"]
