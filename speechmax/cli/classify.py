"""speechmax classify INPUT [--model NAME|PATH] [--json]: what a classifier says about wavs or log-mels."""
import json
import sys
import warnings

from speechmax.cli import CommandError
from speechmax.models.inference import classify_files, folder_accuracy
from speechmax.cli.options import add_model_options, load_model_from_args


def register(sub, help):
    p = sub.add_parser("classify", help=help,
                       description="Top word and its probability for each clip. Where folders name the words (Speech\nCommands layout), the accuracy, per-class accuracy and most confused pairs too.",
                       epilog="examples:\n  speechmax classify clip.wav\n  speechmax classify data/speech_commands --model classifier-separate --json\n"
                              "  speechmax classify clips/ --model kws.pt2 --labels labels.txt --input waveform")
    p.add_argument("input", help="a .wav, a .npy log-mel (80, T) or (B, 80, T), or a folder (searched recursively)")
    add_model_options(p)
    p.add_argument("--json", action="store_true", help="print the machine-readable form")
    p.set_defaults(func=run)


def run(args):
    model = load_model_from_args(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preds, skipped = classify_files(model, args.input)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if not preds:
        raise CommandError(f"{args.input}: nothing to classify ({len(skipped)} unusable file(s))")
    scored = folder_accuracy(preds, model.cfg.labels)   # None unless folders name the words
    if args.json:
        print(json.dumps({"model": args.model, "predictions": [p.to_dict() for p in preds], **(scored or {})},
                         indent=2))
        return 0
    width = max((len(p.path) for p in preds), default=0)
    for p in preds:
        print(f"{p.path:<{width}}  {p.label:<10} {p.prob:.3f}")
    if scored:
        worst = ", ".join(f"{c['label']}->{c['predicted']} x{c['count']}" for c in scored["confusions"][:5])
        if worst:
            print(f"most confused: {worst}")
        print(f"accuracy: {100 * scored['accuracy']:.1f}% ({scored['labelled']} file(s) whose folder names the word)")
    return 0
