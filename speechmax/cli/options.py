"""Options more than one command shares: the classifier under test and the separate classifier, either of which
may be a model speechmax did not train (``--model PATH --labels FILE --input waveform|log-mel
[--features CONFIG.json]``; for the separate classifier ``--separate PATH --separate-labels FILE ...``)."""
from speechmax.models.external import INPUTS
from speechmax.models.registry import load_classifier_any


def _add(p, flag: str, default: str, what: str, shipped: str, extra: str = "") -> None:
    prefix = "" if flag == "model" else f"{flag}-"
    p.add_argument(f"--{flag}", default=default,
                   help=f"{what}: a shipped name ({shipped}), a speechmax model PATH, or your own TorchScript / "
                        f"torch.export (.pt2) file with --{prefix}labels{extra} (default: {default})")
    p.add_argument(f"--{prefix}labels", metavar="FILE", dest=f"{flag}_labels", default=None,
                   help=f"labels of your {what}, one per line in output order (default: none: a speechmax model)")
    p.add_argument(f"--{prefix}input", dest=f"{flag}_input_kind", choices=INPUTS, default=None,
                   help=f"what your {what} reads: log-mel (speechmax's, under --{prefix}features) or waveform "
                        "(16 kHz audio, its own front end inside) (default: log-mel)")
    p.add_argument(f"--{prefix}features", metavar="CONFIG.json", dest=f"{flag}_features", default=None,
                   help=f"your log-mel {what}'s FeatureConfig as JSON (fields of speechmax.FeatureConfig; "
                        "default: speechmax's)")


def add_model_options(p, default: str = "classifier", what: str = "classifier") -> None:
    """--model, --labels, --input, --features."""
    _add(p, "model", default, what, "classifier | classifier-paper | classifier-separate")


def add_separate_options(p, default: str = "classifier-separate", none_ok: bool = True) -> None:
    """--separate, --separate-labels, --separate-input, --separate-features: the second opinion, scored on the
    labels it shares with the model under test."""
    _add(p, "separate", default, "separate classifier", "classifier-separate | classifier | classifier-paper",
         ", or 'none'" if none_ok else "")


def model_spec(args, flag: str = "model") -> dict:
    """What :func:`load_classifier_any` takes for ``--model`` / ``--separate`` and their options."""
    return dict(name_or_path=getattr(args, flag), labels=getattr(args, f"{flag}_labels"),
                input=getattr(args, f"{flag}_input_kind"), features=getattr(args, f"{flag}_features"))


def load_model_from_args(args, flag: str = "model"):
    """The classifier ``add_model_options`` (flag "model") or ``add_separate_options`` (flag "separate", where
    'none' gives None) describes."""
    spec = model_spec(args, flag)
    if flag == "separate" and spec["name_or_path"] == "none":
        return None
    return load_classifier_any(**spec)
