"""Run by tests/test_distributed.py, under torchrun or alone: ``speechmax.evaluate`` on the tiny models of a
folder, with the later stages' audio, figures and t-SNE stood in for (they run on rank 0 alone, the same in any
world; the tests are about how the noise runs are shared out).

argv: MODELS_DIR OUT. Environment: SEED_BY_RANK=1 starts every rank with a different seed (a mismatch);
DIE_AFTER=k makes rank 1 exit after k pieces, as a rank that dies; PIECES_LOG=FILE appends each piece computed
("rank run target block"). A piece is a block of one start (2 starts per class: 2 blocks per target), so the
tests see a target's starts shared out too."""
import os
import sys
from pathlib import Path

import numpy as np

import speechmax.evaluate.noise as noise
from speechmax.evaluate import figures, load_models
from speechmax.evaluate.run import evaluate

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


def _png(path, *args, **kwargs):
    Path(path).write_bytes(PNG)
    return Path(path)


class _FirstTwo:
    def __init__(self, **kwargs):
        pass

    def fit_transform(self, x):
        return np.asarray(x)[:, :2]


def _silent(models, mels, *args, **kwargs):
    return np.zeros((len(mels), (mels.shape[-1] - 1) * models.vocoder.feature_config.hop_length), np.float32)


def main(models_dir: str, out: str) -> None:
    import sklearn.manifold

    import speechmax.evaluate.control as control
    import speechmax.evaluate.listening as listening

    for name in ("heatmap", "success_chart", "spectrogram_grid", "tsne_plot", "control_chart"):
        setattr(figures, name, _png)
    sklearn.manifold.TSNE = _FirstTwo
    control.synthesize = listening.synthesize = _silent
    rank = int(os.environ.get("RANK", 0))
    real_piece, count = noise.noise_piece, [0]

    noise.BLOCK = 1

    def piece(partial, c, *args, **kwargs):
        if os.environ.get("DIE_AFTER") and rank == 1 and count[0] == int(os.environ["DIE_AFTER"]):
            os._exit(17)
        count[0] += 1
        got = real_piece(partial, c, *args, **kwargs)
        if os.environ.get("PIECES_LOG"):
            with open(os.environ["PIECES_LOG"], "a") as f:
                f.write(f"{rank} {partial.folder.name} {c} {kwargs.get('block')}\n")
        return got

    noise.noise_piece = piece
    d = Path(models_dir)
    m = load_models(str(d / "clf"), str(d / "sep"), str(d / "prior"), str(d / "pp"), "griffinlim")
    seed = rank if os.environ.get("SEED_BY_RANK") else 0
    evaluate(out, per_class=2, models=m, speakers=2, steps=2, listen_per_class=1, control_per_class=1,
             c2c_per_class=1, seed=seed, quiet=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
