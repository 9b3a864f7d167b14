"""speechmax.evaluate: the evaluation report -- the seed paper's experiments with confidence intervals, the
controls that isolate the vocoder, figures, a listening set and a debugging summary (:func:`evaluate`)."""
from ..maximize.recipes import RECIPES
from .run import EvalModels, evaluate, load_models

__all__ = ["RECIPES", "EvalModels", "evaluate", "load_models"]
