"""LDEQ (Landmark Deep Equilibrium) and RwR: model, solvers, training, checkpoints, video inference and metrics.

Usable without the pipeline: ``from ldeq.config import get_config; from ldeq.model import LDEQ``.
"""
