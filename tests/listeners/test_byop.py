"""The listener BYOP folders load through the mac API and score like the scorers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wallaroo_pulumi import scorers as S
from wallaroo_pulumi.runtime.listeners.executor import BUILTIN_DIR, BUILTINS, load_byop, predict_byop
from wallaroo_pulumi.scorers.schemas import listener_schemas

from listeners.listener_helpers import BAD, GOOD

pytest.importorskip("mac.inference")


@pytest.mark.parametrize("name", ["toxicity", "sentiment", "profanity", "hate", "combined"])
def test_listener_folder_scores_like_its_scorer(name):
    inf = load_byop(BUILTIN_DIR / name)
    texts = GOOD + BAD
    out = inf.predict({"text": np.array(texts, dtype=object)})
    expect = S.score(texts, name)
    assert list(out) == list(expect)
    for k, v in expect.items():
        assert out[k].dtype == np.float64
        np.testing.assert_allclose(out[k], v)
    # output matches the published schema
    _, out_schema = listener_schemas(name)
    table = predict_byop(inf, pa.table({"text": texts}))
    assert table.schema.names == out_schema.names
    assert all(f.type == pa.float64() for f in table.schema)


def test_text_field_from_env(monkeypatch):
    inf = load_byop(BUILTIN_DIR / "toxicity")
    monkeypatch.setenv("LISTENER_TEXT_FIELD", "answer")
    out = inf.predict({"answer": np.array(BAD, dtype=object)})
    assert (out["toxicity"] > 0.9).all()


def test_bad_input_names_the_field(monkeypatch):
    from mac.exceptions import InferenceDataValidationError

    monkeypatch.delenv("LISTENER_TEXT_FIELD", raising=False)
    inf = load_byop(BUILTIN_DIR / "sentiment")
    with pytest.raises(InferenceDataValidationError, match="'text'.*missing.*'prompt'"):
        inf.predict({"prompt": np.array(["hi"], dtype=object)})
    with pytest.raises(InferenceDataValidationError, match="'text' must hold strings: row 1 is float"):
        inf.predict({"text": np.array(["hi", 1.5], dtype=object)})


def test_validator_returns_text_and_scores():
    inf = load_byop(BUILTIN_DIR / "validator")
    texts = GOOD + BAD
    out = inf.predict({"generated_text": np.array(texts, dtype=object)})
    in_schema, out_schema = listener_schemas("validator")
    assert list(out) == out_schema.names and in_schema.names == ["generated_text"]
    assert out["generated_text"].tolist() == texts
    np.testing.assert_allclose(out["toxicity"], S.score_toxicity(texts)["toxicity"])
    assert (out["hate"][3:] > out["hate"][:3].max()).all() or out["hate"][4] > 0.5


def test_every_builtin_folder_is_importable_without_the_network():
    for name in BUILTINS:
        assert (BUILTIN_DIR / name / "model.py").is_file()
