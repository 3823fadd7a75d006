"""gendiff: one guided-diffusion sampler for active subsampling, trajectory synthesis, generative
policies and entropy-aware LLM RL."""

__version__ = "0.1.0"
