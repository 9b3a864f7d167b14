"""Classifier and prior models: shapes, named layers, save/load, config mismatches."""
import pytest
import torch

from speechmax.features import FeatureConfig
from speechmax.models.classifier import PRESETS as CPRESETS, Classifier, ClassifierConfig, load_classifier, save_classifier
from speechmax.models.prior import PRESETS as PPRESETS, Prior, load_prior, save_prior
from speechmax.models.registry import load_model
from speechmax.weights import WeightsError


@pytest.mark.parametrize("preset", list(CPRESETS))
def test_classifier_shapes_and_layers(preset):
    m = Classifier(CPRESETS[preset]).eval()
    x = torch.randn(3, 80, 101)
    acts = m.activations(x)
    assert list(acts)[-1] == "logits" and len(acts) >= 3
    torch.testing.assert_close(acts["logits"], m(x))
    assert m(x).shape == (3, 35)
    with pytest.raises(ValueError, match=r"\(batch, 80, 101\)"):
        m(torch.randn(2, 40, 101))


@pytest.mark.parametrize("preset", list(PPRESETS))
def test_prior_shapes(preset):
    p = Prior(PPRESETS[preset]).eval()
    z = torch.randn(4, p.cfg.latent)
    assert p.decode(z).shape == (4, 80, 101)
    mu, logvar = p.encode(torch.randn(4, 80, 101))
    assert mu.shape == (4, p.cfg.latent) and (logvar is None) == (preset == "prior-paper")
    with pytest.raises(ValueError, match="latent must be"):
        p.decode(torch.randn(4, p.cfg.latent + 1))


def test_classifier_round_trip_and_registry(tmp_path):
    cfg = ClassifierConfig(arch="tcres", channels=(8, 8), kernel=3, labels=tuple(f"w{i}" for i in range(35)))
    m = Classifier(cfg).eval()
    m.norm.set_stats(torch.randn(10, 80, 101) * 2 - 5)
    save_classifier(m, tmp_path / "c", metrics={"test_accuracy": 0.5})
    m2 = load_classifier(tmp_path / "c")
    x = torch.randn(2, 80, 101)
    torch.testing.assert_close(m(x), m2(x))
    assert m2.cfg == cfg
    assert isinstance(load_model(tmp_path / "c.safetensors"), Classifier)
    with pytest.raises(WeightsError, match="expected a prior"):
        load_model(tmp_path / "c", kind="prior")


def test_prior_round_trip(tmp_path):
    p = Prior(PPRESETS["prior"]).eval()
    save_prior(p, tmp_path / "p")
    z = torch.randn(2, p.cfg.latent)
    torch.testing.assert_close(load_prior(tmp_path / "p").decode(z), p.decode(z))


def test_mismatched_feature_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="n_mels"):
        Classifier(ClassifierConfig(), FeatureConfig(n_mels=40))
    from speechmax.features import FeatureMismatchError, check_compatible

    c, p = Classifier(CPRESETS["classifier"]), Prior(PPRESETS["prior"], FeatureConfig(fmin=0.0))
    with pytest.raises(FeatureMismatchError, match="fmin"):
        check_compatible(c.feature_config, p.feature_config, "classifier", "prior")


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 80, 101)
    y = torch.randint(0, 35, (64,))
    for model, loss_fn in ((Classifier(ClassifierConfig(channels=(16, 16), kernel=3)),
                            lambda m: torch.nn.functional.cross_entropy(m(x), y)),
                           (Prior(PPRESETS["prior"]), lambda m: m.loss(x, beta=0.1)[0])):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        model.train()
        first = loss_fn(model).item()
        for _ in range(15):
            loss = loss_fn(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss_fn(model).item() < first
