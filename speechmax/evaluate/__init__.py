"""speechmax.evaluate: the evaluation report -- the seed paper's experiments with confidence intervals, the
controls that isolate the vocoder, figures, a listening set and a debugging summary (:func:`evaluate`).

:mod:`.run` holds the driver, which reads as the steps run; one module a step: :mod:`.noise` (noise -> class),
:mod:`.control` (the vocoder control), :mod:`.class_to_class`, :mod:`.latents` (t-SNE and the figures),
:mod:`.listening` (the listening set, written by :mod:`speechmax.listen.build`), :mod:`.debugging` (anomalies:
the torch-free detectors of :mod:`.anomaly`, and misclassified clips against the prototypes, :mod:`.prototypes`).
Beside them: :mod:`.inputs` (models, clips, prediction, synthesis), :mod:`.resume` (what a rerun takes up),
:mod:`.timing`, and the numbers, pictures and page of the report (:mod:`.stats`, :mod:`.figures`, :mod:`.report`).
"""
from ..maximize.recipes import RECIPES
from .inputs import EvalModels, load_models
from .run import evaluate

__all__ = ["RECIPES", "EvalModels", "evaluate", "load_models"]
