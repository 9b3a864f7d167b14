"""Run by tests/test_train_distributed.py, under torchrun or alone: ``speechmax train ...`` commands through the CLI,
with the shipped presets swapped for tiny ones of the same kinds (``classifier``: a TC-ResNet with BatchNorm and
dropout, 8 channels; ``prior-paper``: the deterministic AE with a 16-d code; the vocoder: a 4-layer WaveNet of 8
residual channels), so a few epochs or steps take seconds.

argv: speechmax command lines separated by ``+`` (e.g. ``train classifier --data D --out O + train prior ...``).
Environment: WRITES_LOG=FILE appends "rank what" for every file a rank writes (run.json, log lines, weights,
confusion plot); SEED_BY_RANK=1 adds ``--seed RANK`` to every command (ranks with different settings);
STOP_AFTER_EPOCH=k makes rank 0 exit once it has written epoch k's checkpoint, as a run that is killed."""
import os
import sys

import safetensors.torch

import speechmax.cli.train as cli_train
import speechmax.models.train as train
import speechmax.training as training
from speechmax.cli import main
from speechmax.models.classifier import PRESETS as CLASSIFIER_PRESETS
from speechmax.models.classifier import ClassifierConfig
from speechmax.models.prior import PRESETS as PRIOR_PRESETS
from speechmax.models.prior import PriorConfig
from speechmax.models.wavenet import WaveNetConfig

RANK = int(os.environ.get("RANK", 0))


def _logged(what, fn):
    def wrapper(*args, **kwargs):
        if os.environ.get("WRITES_LOG"):
            with open(os.environ["WRITES_LOG"], "a") as f:
                f.write(f"{RANK} {what}\n")
        return fn(*args, **kwargs)
    return wrapper


def run(argv: list[str]) -> int:
    CLASSIFIER_PRESETS["classifier"] = ClassifierConfig(arch="tcres", channels=(8, 8, 8), kernel=3, dropout=0.2)
    PRIOR_PRESETS["prior-paper"] = PriorConfig(arch="paper", latent=16)
    cli_train.WaveNetConfig = lambda **kw: WaveNetConfig(residual_channels=8, gate_channels=16, skip_channels=16,
                                                          out_channels=32, n_layers=4, dilation_cycle=2,
                                                          cond_channels=8, **kw)
    safetensors.torch.save_file = _logged("safetensors", safetensors.torch.save_file)
    training.JsonLog.write = _logged("log", training.JsonLog.write)
    train.prepare_run = _logged("run.json", train.prepare_run)
    train.plot_confusion = _logged("confusion.png", train.plot_confusion)
    real_checkpoint = train.save_checkpoint

    def checkpoint(out, model, opt, ema, state, **kwargs):
        got = real_checkpoint(out, model, opt, ema, state, **kwargs)
        if os.environ.get("STOP_AFTER_EPOCH") and state["epoch"] == int(os.environ["STOP_AFTER_EPOCH"]):
            os._exit(17)
        return got

    train.save_checkpoint = checkpoint
    commands, cmd = [], []
    for a in argv + ["+"]:
        if a == "+":
            commands.append(cmd)
            cmd = []
        else:
            cmd.append(a)
    for cmd in commands:
        if os.environ.get("SEED_BY_RANK"):
            cmd = cmd + ["--seed", str(RANK)]
        rc = main(cmd)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
