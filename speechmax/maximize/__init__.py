"""Activation maximization: pull class examples -- and hidden-unit examples -- out of a speech classifier.

:func:`maximize` climbs many starts toward many targets through a prior's latent or directly on log-mel
features; :mod:`speechmax.ops.maximize` holds the ascent step itself (fused kernels beside autograd).
"""
from ..ops.maximize import L2, AdamState, Clamp, Diversity, Jitter, TotalVariation, Unit, bf16_isa
from .engine import MaximizeResult, maximize, parse_objective, resolve_targets
from .recipes import DEFAULT_RECIPE, PAPER, RECIPES, Recipe, get_recipe

__all__ = ["maximize", "MaximizeResult", "PAPER", "RECIPES", "DEFAULT_RECIPE", "Recipe", "get_recipe", "Unit", "L2",
           "TotalVariation", "Jitter", "Clamp", "Diversity", "AdamState", "parse_objective", "resolve_targets", "bf16_isa"]
