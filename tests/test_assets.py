"""Quick smoke tests of the shipped weights: they load, their cards are complete, and they work on a word
synthesized here by pseudo-speakers from a seed never used in training."""
import pytest
import torch

from speechmax.assets import list_assets
from speechmax.models.registry import load_model

ASSETS = list_assets()
CLASSIFIERS = [n for n in ("classifier", "classifier-separate", "classifier-paper") if n in ASSETS]
PRIORS = [n for n in ("prior", "prior-paper") if n in ASSETS]
UNSEEN_SEED = 987_654  # the shipped models were trained on seed 1000


def test_every_card_names_config_data_metrics_and_sha():
    for name, a in ASSETS.items():
        from speechmax.weights import read_card

        card = read_card(a.path)
        assert {"kind", "config", "feature_config", "metrics", "sha256"} <= set(card), name
        assert card.get("training_data"), f"{name}: card does not say what it was trained on"


def test_assets_fit_the_size_budget():
    total = sum(a.path.stat().st_size for a in ASSETS.values())
    assert total <= 30 * 2 ** 20, f"shipped weights take {total / 2 ** 20:.1f} MB > 30 MB"


@pytest.fixture(scope="module")
def unseen_words(tmp_path_factory):
    from speechmax.data import available_engines, build_corpus

    if not available_engines():
        pytest.skip("no TTS engine installed")
    root = tmp_path_factory.mktemp("unseen")
    build_corpus(root / "c", speakers=3, seed=UNSEEN_SEED, workers=2)
    from speechmax.data.dataset import SpeechCommands

    xs, ys = [], []
    for split in ("training", "validation", "testing"):
        x, y, _ = SpeechCommands(root / "c", split).tensors()
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("name", CLASSIFIERS or [pytest.param("classifier", marks=pytest.mark.skip("not shipped yet"))])
def test_shipped_classifier_recognizes_unseen_speakers(name, unseen_words):
    model = load_model(name, kind="classifier")
    x, y = unseen_words
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    floor = 0.8 if name != "classifier-paper" else 0.6
    assert acc >= floor, f"{name}: {acc:.3f} on {len(y)} clips of 3 unseen speakers"


@pytest.mark.parametrize("name", PRIORS or [pytest.param("prior", marks=pytest.mark.skip("not shipped yet"))])
def test_shipped_prior_decodes_and_reconstructs(name, unseen_words):
    prior = load_model(name, kind="prior")
    x, _ = unseen_words
    with torch.no_grad():
        rec = prior.reconstruct(x[:16])
        z = torch.randn(4, prior.cfg.latent, generator=torch.Generator().manual_seed(0))
        dec = prior.decode(z)
    assert rec.shape == x[:16].shape and dec.shape == (4, 80, 101) and torch.isfinite(dec).all()
    # reconstructions are closer to their inputs than to other clips
    d_own = ((rec - x[:16]) ** 2).mean().item()
    d_other = ((rec - x[:16].roll(1, 0)) ** 2).mean().item()
    assert d_own < d_other


@pytest.mark.skipif("vocoder" not in ASSETS, reason="the vocoder is not shipped yet")
def test_shipped_vocoder_resynthesizes_a_word(unseen_words):
    """The shipped WaveNet loads, its card carries the measured quality (three accuracies, two STOI), and it
    resynthesizes a word of an unseen speaker whose loudness follows the original's frame by frame."""
    import numpy as np

    import speechmax
    from speechmax.weights import read_card

    metrics = read_card(ASSETS["vocoder"].path)["metrics"]
    assert set(metrics["separate_accuracy"]) == {"original", "wavenet", "griffinlim"}
    assert set(metrics["stoi"]) == {"wavenet", "griffinlim"} and metrics["clips"] >= 350
    assert 200 <= metrics["stoi_clips"] <= metrics["clips"]      # the clips long enough for STOI
    voc = speechmax.Vocoder.from_pretrained("default")
    x, _ = unseen_words
    mel = x[0, :, :51]   # half a second
    wave = voc.synthesize(mel, seed=0)
    assert wave.shape == (50 * 160,) and np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    loud_in = mel.exp().pow(2).sum(0)[1:].log().numpy()
    loud_out = speechmax.log_mel(torch.from_numpy(wave), voc.feature_config).exp().pow(2).sum(0)[1:].log().numpy()
    n = min(len(loud_in), len(loud_out))
    assert np.corrcoef(loud_in[:n], loud_out[:n])[0, 1] > 0.6
