"""The generic anomaly detectors (speechmax.evaluate.anomaly) and misclassified clips against the prototypes
(speechmax.evaluate.prototypes), on small log-mel arrays built here: planted departures are found with the right
sign, place and class; samples from the real clips' own distribution give none."""
import numpy as np
import pytest

from speechmax.evaluate.anomaly import THRESHOLD, band_edges_hz, db_per_log_unit, find_anomalies
from speechmax.features import FeatureConfig

CFG = FeatureConfig()
LABELS = ("cat", "dog", "bird")
DB = db_per_log_unit(CFG)   # 8.69 dB per natural-log unit of a magnitude mel
FLOOR = -9.0                # log-mel of the silent frames


def word_clips(rng, n, *, shift=0, floor=FLOOR, plant=None):
    """(n, 80, 101) log-mels: a noise floor, and a 400 ms 'word' from frame 30 (+- 3 frames, + ``shift``) with a
    falling spectrum that varies by clip; plant: (bands, dB) added to those bands over the whole clip."""
    x = floor + 0.3 * rng.standard_normal((n, CFG.n_mels, 101))
    tilt = -2.0 - np.linspace(0, 3, CFG.n_mels)
    for i in range(n):
        s = 30 + shift + int(rng.integers(-3, 4))
        x[i, :, s:s + 40] = (tilt + 0.4 * rng.standard_normal())[:, None] + 0.3 * rng.standard_normal((CFG.n_mels, 40))
    if plant is not None:
        bands, db = plant
        x[:, bands] += db / DB
    return x


def corpus(rng, n_real=30, n_max=10, **kinds):
    """Real clips of the three words, and maximized samples per word drawn as ``kinds[word]`` says (the real
    clips' own distribution for a word not given)."""
    real = np.concatenate([word_clips(rng, n_real) for _ in LABELS])
    real_labels = np.repeat(np.arange(3), n_real)
    maxed = np.concatenate([word_clips(rng, n_max, **kinds.get(w, {})) for w in LABELS])
    return maxed, np.repeat(np.arange(3), n_max), real, real_labels


def test_planted_departures_are_found_with_sign_band_and_class():
    rng = np.random.default_rng(1)
    maxed, t, real, y = corpus(rng, cat=dict(plant=(slice(50, 54), 14.0)), dog=dict(shift=-20),
                               bird=dict(floor=FLOOR + 3.0))
    out = find_anomalies(maxed, t, real, y, LABELS, CFG, seed=0)
    assert out["skipped"] == {} and out["threshold"] == THRESHOLD
    edges = band_edges_hz(CFG)

    cat = out["per_class"]["cat"]
    (band,) = [a for a in cat if a["kind"] == "band_energy"]   # one span: the planted bands grouped
    assert band["effect"] > THRESHOLD and band["ci"][0] > THRESHOLD / 2
    assert band["bands"] == [50, 53] and band["band_hz"] == [round(edges[50, 0]), round(edges[53, 1])]
    assert band["raw"] == pytest.approx(14.0, abs=1.0)   # dB, as planted
    # the plant is there in the silent frames too: it makes their spectrum less flat, and nothing else
    assert {a["what"] for a in cat} <= {"band energy", "noise floor flatness"}
    assert np.argmax(out["band_z"][0]) in range(50, 54)

    dog = out["per_class"]["dog"]
    kinds = {a["what"]: a for a in dog}
    assert {"energy centroid", "onset"} <= set(kinds) and not any(a["kind"] == "band_energy" for a in dog)
    for what in ("energy centroid", "onset"):   # 20 frames of 10 ms earlier
        assert kinds[what]["effect"] < -THRESHOLD and kinds[what]["ci"][1] < 0
        assert kinds[what]["raw"] == pytest.approx(-200, abs=30) and kinds[what]["unit"] == "ms"

    bird = out["per_class"]["bird"]
    (floor,) = [a for a in bird if a["what"] == "noise floor level"]
    assert floor["effect"] > THRESHOLD and floor["raw"] == pytest.approx(3.0 * DB, abs=1.5)
    assert [a["rank"] for a in bird] == list(range(1, len(bird) + 1))
    assert all(abs(a["effect"]) >= abs(b["effect"]) for a, b in zip(bird, bird[1:]))


def test_no_anomaly_when_maximized_samples_are_like_the_real_clips():
    for seed in range(3):
        maxed, t, real, y = corpus(np.random.default_rng(100 + seed))
        out = find_anomalies(maxed, t, real, y, LABELS, CFG, seed=seed)
        assert out["per_class"] == {"cat": [], "dog": [], "bird": []}, seed
        assert np.nanmax(np.abs(np.array(out["band_z"], dtype=float))) < THRESHOLD


def test_a_word_missing_from_the_reference_or_too_rare_is_skipped_with_the_reason():
    maxed, t, real, y = corpus(np.random.default_rng(2))
    keep = (y != 2) & ~((y == 1) & (np.arange(len(y)) % 30 >= 2))   # no bird clip, 2 dog clips
    out = find_anomalies(maxed, t, real[keep], y[keep], LABELS, CFG, seed=0)
    assert set(out["per_class"]) == {"cat"}
    assert out["skipped"]["bird"] == "the reference corpus has no clip of 'bird'"
    assert out["skipped"]["dog"].startswith("2 real clip(s) of 'dog', needs 3")
    assert out["band_z"][2] == [None] * CFG.n_mels
    none = find_anomalies(maxed[t != 0], t[t != 0], real, y, LABELS, CFG, seed=0)
    assert "maximized sample(s) of 'cat'" in none["skipped"]["cat"]


def test_the_bootstrap_is_reproducible_per_seed():
    maxed, t, real, y = corpus(np.random.default_rng(3), cat=dict(plant=(slice(10, 14), 10.0)), dog=dict(shift=-15))
    a = find_anomalies(maxed, t, real, y, LABELS, CFG, seed=5)
    assert a == find_anomalies(maxed, t, real, y, LABELS, CFG, seed=5)
    b = find_anomalies(maxed, t, real, y, LABELS, CFG, seed=6)
    cis = lambda r: [x["ci"] for w in LABELS for x in r["per_class"][w]]  # noqa: E731
    assert cis(a) != cis(b) and a["band_z"] == b["band_z"]   # the intervals are drawn; the point effects are not


def test_a_confusion_the_real_clips_do_not_have_is_found():
    maxed, t, real, y = corpus(np.random.default_rng(4))
    real_probs = np.full((len(y), 3), 0.05)
    real_probs[np.arange(len(y)), y] = 0.9
    heat = np.array([[0.4, 0.55, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])   # maximized cat: heard as dog
    out = find_anomalies(maxed, t, real, y, LABELS, CFG, seed=0,
                         confusion={"heatmap": heat, "real_probs": real_probs})
    (conf,) = out["per_class"]["cat"]
    assert conf["kind"] == "confusion" and conf["heard_as"] == "dog" and conf["effect"] > THRESHOLD
    assert conf["maximized"] == 0.55 and conf["real"] == 0.05
    assert out["per_class"]["dog"] == [] and out["per_class"]["bird"] == []


def test_centred_confusions_must_stand_out_among_the_words():
    """Six words; the maximized samples of every word are heard 0.2 - 0.3 as some other word (a fickle separate
    classifier), one word's 0.7 as its neighbour: plainly every word alarms, centred only that one does."""
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(6)]
    real = np.concatenate([word_clips(rng, 20) for _ in words])
    y = np.repeat(np.arange(6), 20)
    maxed = np.concatenate([word_clips(rng, 8) for _ in words])
    t = np.repeat(np.arange(6), 8)
    real_probs = np.full((len(y), 6), 0.01)
    real_probs[np.arange(len(y)), y] = 0.95
    heat = np.full((6, 6), 0.02)
    for c, rise in enumerate([0.2, 0.25, 0.7, 0.3, 0.22, 0.28]):
        heat[c, c], heat[c, (c + 1) % 6] = 0.9 - rise, rise
    conf = {"heatmap": heat, "real_probs": real_probs}
    plain = find_anomalies(maxed, t, real, y, words, CFG, seed=0, confusion=conf)
    assert all(any(a["kind"] == "confusion" for a in plain["per_class"][w]) for w in words)
    centred = find_anomalies(maxed, t, real, y, words, CFG, seed=0, confusion=conf, centre=True)
    alarms = {w: [a for a in v if a["kind"] == "confusion"] for w, v in centred["per_class"].items()}
    assert [w for w, v in alarms.items() if v] == ["w2"] and alarms["w2"][0]["heard_as"] == "w3"
    shift, floor = centred["confusion_centre"]
    assert shift == pytest.approx(0.255, abs=0.01) and floor >= 0.05


def test_a_misclassified_clip_is_named_by_the_bands_that_pull_it_to_the_wrong_word():
    from speechmax.evaluate.prototypes import METHOD, compare_to_prototypes

    rng = np.random.default_rng(7)
    loud = lambda x, bands: (x.__setitem__((slice(None), bands, slice(30, 70)), 3.0), x)[1]  # noqa: E731
    protos = np.concatenate([loud(word_clips(rng, 2), slice(10, 15)), loud(word_clips(rng, 2), slice(60, 65))])
    proto_t = np.array([0, 0, 1, 1])
    clips = np.concatenate([loud(word_clips(rng, 3), slice(10, 15)), loud(word_clips(rng, 2), slice(60, 65))])
    clips[0, 60:65, 30:70] = 3.0            # a 'cat' that also carries the 'dog' band: taken as dog
    clips[0, 10:15, 30:70] = -2.5
    labels, pred = np.array([0, 0, 0, 1, 1]), np.array([1, 0, 0, 1, 2])   # the last: 'bird', no prototype
    out = compare_to_prototypes(clips, labels, pred, protos, proto_t, LABELS, CFG)
    assert out["method"] == METHOD and out["misclassified"] == 2 and out["without_prototype"] == 1
    (case,) = out["cases"]
    edges = band_edges_hz(CFG)
    assert case["clip"] == 0 and (case["true"], case["predicted"], case["nearer"]) == ("cat", "dog", "predicted")
    assert case["true_prototype"] in (0, 1) and case["wrong_prototype"] in (2, 3) and case["margin"] > 0
    lo, hi = case["pull_bands_hz"][0]
    assert lo <= edges[60, 0] + 1 and hi >= edges[64, 1] - 1 and hi - lo < 2000   # the dog band, in Hz
    assert abs(case["pull_ms"][0] - 300) <= 50 and abs(case["pull_ms"][1] - 700) <= 50   # frames 30-70, +- jitter
    assert out["per_class"]["cat"] == {"clips": 3, "misclassified": 1, "most_common_wrong": "dog", "wrong_count": 1,
                                       "pull_bands_hz": case["pull_bands_hz"]}
    assert out["per_class"]["dog"]["misclassified"] == 1 and out["per_class"]["dog"]["pull_bands_hz"] == []
    assert "bird" not in out["per_class"]


def test_the_summary_names_the_planted_departures_in_words():
    from speechmax.evaluate.report import anomaly_sentence, anomaly_summary

    maxed, t, real, y = corpus(np.random.default_rng(1), cat=dict(plant=(slice(50, 54), 14.0)), dog=dict(shift=-20))
    out = find_anomalies(maxed, t, real, y, LABELS, CFG, seed=0)
    band = next(a for a in out["per_class"]["cat"] if a["kind"] == "band_energy")
    assert anomaly_sentence("cat", band).startswith("maximized 'cat' carries +14.1 dB at 2.5-2.9 kHz that real 'cat' "
                                                    "clips do not have (z +9.6, 95% CI [+7.8, +13.0])")
    text = " ".join(anomaly_summary(out, None))   # each word's strongest: cat's flatter silence, dog's timing
    assert "maximized 'cat' has less flat" in text and "'bird'" not in text
    assert "maximized 'dog' puts its energy centroid 189 ms earlier than real 'dog' clips" in text
    # a departure most words share is said once, as the maximization's
    maxed, t, real, y = corpus(np.random.default_rng(1), **{w: dict(floor=FLOOR + 3.0) for w in LABELS})
    lines = anomaly_summary(find_anomalies(maxed, t, real, y, LABELS, CFG, seed=0), None)
    assert lines[0].startswith("In 3 of 3 words: maximized '") and "noise floor 26." in lines[0]


def test_paired_floor_is_read_on_the_frames_quiet_in_the_start():
    """Regression: with starts, a change that only scatters the start's silent frames (half up, half down by the
    same dB) is no change of the floor -- re-picking the quietest frames after it read the lowered half and
    reported a floor 2.7-2.8 dB lower -- and raising the start's silent frames reads as a higher floor."""
    rng = np.random.default_rng(3)
    start = word_clips(rng, 12)
    real = start + 0.05 * rng.standard_normal(start.shape)          # the reference ascent: barely moved
    quiet = [i for i in range(101) if not 25 <= i < 75]             # the starts' silent part (the word: 27-73)
    scatter = start.copy()
    scatter[:, :, quiet[0::2]] += 3.0 / DB
    scatter[:, :, quiet[1::2]] -= 3.0 / DB
    raised = start.copy()
    raised[:, :, quiet] += 3.0 / DB
    y = np.repeat(np.arange(3), 4)
    kw = dict(seed=0, top=None, threshold=0.0)

    def floor(maxed):
        out = find_anomalies(maxed, y, real, y, LABELS, CFG, starts=(start, start), **kw)
        return [next(a["raw"] for a in out["per_class"][w] + [{"what": "noise floor level", "raw": 0.0}]
                     if a["what"] == "noise floor level") for w in LABELS]

    assert np.allclose(floor(scatter), 0.0, atol=0.5)
    assert np.all(np.array(floor(raised)) > 2.0)
