"""Tabular episodic RL with an episode-wise conservative constraint: the MDP type and suite (``mdp``), UCBVI
(``ucbvi``), StepMix (``stepmix``), EpsMix (``epsmix``), the baseline learner and the registry (``learner``), and the
experiment runner behind ``gendiff tabular conservative`` (``run``). Importing the package registers the learners.
"""

from __future__ import annotations

from gendiff.rl.tabular.epsmix import EpsMix
from gendiff.rl.tabular.learner import TABULAR_LEARNERS, Baseline, EpisodePlan, LearnerSetup, TabularLearner
from gendiff.rl.tabular.mdp import (
    TABULAR_TASKS,
    ConservativeTask,
    TabularMDP,
    evaluate_policy,
    expected_return,
    optimal_values,
    sample_episode,
)
from gendiff.rl.tabular.stepmix import StepMix
from gendiff.rl.tabular.ucbvi import UCBVI

__all__ = ["TABULAR_LEARNERS", "TABULAR_TASKS", "UCBVI", "Baseline", "ConservativeTask", "EpisodePlan", "EpsMix",
           "LearnerSetup", "StepMix", "TabularLearner", "TabularMDP", "evaluate_policy", "expected_return",
           "optimal_values", "sample_episode"]
