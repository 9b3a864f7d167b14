"""speechmax info [--json]: version, torch, kernel backends and shipped assets."""
import json

import torch

from speechmax import __version__
from speechmax.assets import list_assets
from speechmax.ops import available_backends


def register(sub, help):
    p = sub.add_parser("info", help=help,
                       description="Version, torch, which kernel backends run here, and the shipped models with their\nsha256 and measured metrics.",
                       epilog="example:\n  speechmax info --json")
    p.add_argument("--json", action="store_true", help="print the machine-readable form")
    p.set_defaults(func=run)


def run(args):
    info = {
        "version": __version__,
        "torch": torch.__version__,
        "backends": available_backends(),
        "assets": {name: {"path": str(a.path), "sha256": a.sha256, "metrics": a.metrics} for name, a in list_assets().items()},
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"speechmax {info['version']} (torch {info['torch']})")
    print("backends: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["backends"].items()))
    if not info["assets"]:
        print("assets: none shipped yet")
    for name, a in info["assets"].items():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in a["metrics"].items() if not isinstance(v, (dict, list)))
        print(f"  {name}: {a['path']} [{shown}]")
    return 0
