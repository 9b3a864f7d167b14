"""Arbitrary bytes into the file loaders (issue 22): each gives its clear speechmax error type -- AudioError
for audio and .npy log-mels, WeightsError for model cards and weights -- never another exception.
Bounded: few examples, a deadline, no shrinking database."""
import hashlib
import io
import json
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from speechmax.features import AudioError, load_audio, load_log_mel  # noqa: E402
from speechmax.weights import WeightsError, load_weights  # noqa: E402

FUZZ = settings(max_examples=60, deadline=2000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def npy_header(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()   # magic number and header


WAV_HEAD = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00"
# arbitrary bytes, and arbitrary bytes behind a plausible start, so the fuzzing gets past the magic numbers
wav_bytes = st.one_of(st.binary(max_size=512), st.binary(max_size=512).map(lambda b: WAV_HEAD + b))
npy_bytes = st.one_of(
    st.binary(max_size=512),
    st.tuples(st.lists(st.integers(0, 2 ** 40), max_size=3).map(tuple),
              st.sampled_from(["<f4", "<f8", "<i2", "|b1", "<U3", "|O", "<c8", "|V4"]),
              st.binary(max_size=512)).map(lambda t: npy_header(t[0], t[1]) + t[2]))


def check(fn, path, error):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # warnings (a truncated WAV) are fine; exceptions must be `error`
        try:
            fn(path)
        except error:
            pass


@FUZZ
@given(data=wav_bytes)
def test_load_audio_on_arbitrary_bytes(tmp_path, data):
    (tmp_path / "x.wav").write_bytes(data)
    check(load_audio, tmp_path / "x.wav", AudioError)


@FUZZ
@given(data=npy_bytes)
def test_load_log_mel_on_arbitrary_bytes(tmp_path, data):
    (tmp_path / "x.npy").write_bytes(data)
    check(load_log_mel, tmp_path / "x.npy", AudioError)


@FUZZ
@given(card=st.one_of(st.binary(max_size=256), st.sampled_from([b"[]", b"null", b"1", b'"x"', b"{}",
                                                                 b'{"sha256": 5}', b'{"kind": []}'])),
       weights=st.binary(max_size=256))
def test_load_weights_on_arbitrary_bytes(tmp_path, card, weights):
    (tmp_path / "m.json").write_bytes(card)
    (tmp_path / "m.safetensors").write_bytes(weights)
    check(lambda p: load_weights(p, kind="classifier"), tmp_path / "m", WeightsError)
    # a card whose sha256 matches the arbitrary weights: the bytes reach the safetensors parser
    (tmp_path / "m.json").write_text(json.dumps({"kind": "classifier", "sha256": hashlib.sha256(weights).hexdigest()}))
    check(lambda p: load_weights(p, kind="classifier"), tmp_path / "m", WeightsError)
