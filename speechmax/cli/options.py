"""Options more than one command shares: the classifier under test, which may be a model speechmax did not
train (``--model PATH --labels FILE --input waveform|log-mel [--features CONFIG.json]``)."""
from speechmax.models.external import INPUTS
from speechmax.models.registry import load_classifier_any


def add_model_options(p, default: str = "classifier", what: str = "classifier") -> None:
    p.add_argument("--model", default=default,
                   help=f"{what}: a shipped name (classifier | classifier-paper | classifier-separate), a speechmax "
                        "model PATH, or your own TorchScript / torch.export (.pt2) file with --labels "
                        f"(default: {default})")
    p.add_argument("--labels", metavar="FILE", default=None,
                   help="your model's labels, one per line in output order (default: none: a speechmax model)")
    p.add_argument("--input", dest="input_kind", choices=INPUTS, default=None,
                   help="what your model reads: log-mel (speechmax's, under --features) or waveform (16 kHz audio, "
                        "its own front end inside) (default: log-mel)")
    p.add_argument("--features", metavar="CONFIG.json", default=None,
                   help="your log-mel model's FeatureConfig as JSON (fields of speechmax.FeatureConfig; "
                        "default: speechmax's)")


def load_model_from_args(args):
    """The classifier ``add_model_options`` describes."""
    return load_classifier_any(args.model, labels=args.labels, input=args.input_kind, features=args.features)
