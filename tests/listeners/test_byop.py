"""The listener BYOP folders load through the mac API and score like the scorers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.listeners.listener_helpers import BAD, GOOD
from wallaroo_pulumi import scorers as S
from wallaroo_pulumi.runtime.services.listeners.executor import BUILTIN_DIR, predict_byop
from wallaroo_pulumi.runtime.sidekick.loader import ModelLoadError, load_inference
from wallaroo_pulumi.scorers.registry import BUILTINS
from wallaroo_pulumi.scorers.schemas import listener_schemas


@pytest.mark.parametrize("name", ["toxicity", "sentiment", "profanity", "hate", "combined"])
def test_listener_folder_scores_like_its_scorer(name):
    inf = load_inference(BUILTIN_DIR / name)
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
    inf = load_inference(BUILTIN_DIR / "toxicity")
    monkeypatch.setenv("LISTENER_TEXT_FIELD", "answer")
    out = inf.predict({"answer": np.array(BAD, dtype=object)})
    assert (out["toxicity"] > 0.9).all()


def test_bad_input_names_the_field(monkeypatch):
    from mac.exceptions import InferenceDataValidationError

    monkeypatch.delenv("LISTENER_TEXT_FIELD", raising=False)
    inf = load_inference(BUILTIN_DIR / "sentiment")
    with pytest.raises(InferenceDataValidationError, match="'text'.*missing.*'prompt'"):
        inf.predict({"prompt": np.array(["hi"], dtype=object)})
    with pytest.raises(InferenceDataValidationError, match="'text' must hold strings: row 1 is float"):
        inf.predict({"text": np.array(["hi", 1.5], dtype=object)})


def test_validator_returns_text_and_scores():
    inf = load_inference(BUILTIN_DIR / "validator")
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


@pytest.mark.parametrize("name", BUILTINS)
def test_each_folder_defines_one_builder_of_its_own(name, tmp_path):
    """model.py is a few lines on wallaroo_pulumi.scorers.byop, and still a valid BYOP module: its
    namespace holds exactly one InferenceBuilder subclass, defined there (any loader finds it)."""
    import inspect

    from mac.inference.creation import InferenceBuilder
    from wallaroo_pulumi.runtime.sidekick.loader import find_builder, import_model_modules
    from wallaroo_pulumi.scorers.byop import ScorerInferenceBuilder

    folder = BUILTIN_DIR / name
    assert len((folder / "model.py").read_text().splitlines()) < 30
    modules = import_model_modules(folder, f"builtin-{name}")
    builder = find_builder(modules, folder, name)
    assert issubclass(builder, ScorerInferenceBuilder) and not inspect.isabstract(builder)
    (module,) = modules
    builders = [o for o in vars(module).values()
                if isinstance(o, type) and issubclass(o, InferenceBuilder) and o is not InferenceBuilder]
    assert builders == [builder] and builder.__module__ == module.__name__


def test_validator_passes_none_through_as_empty_text(monkeypatch):
    monkeypatch.setenv("LISTENER_TEXT_FIELD", "answer")  # the validator's column is fixed
    inf = load_inference(BUILTIN_DIR / "validator")
    out = inf.predict({"generated_text": np.array([None, b"bytes ok"], dtype=object)})
    assert out["generated_text"].tolist() == ["", "bytes ok"]
    assert list(out)[0] == "generated_text" and out["toxicity"].dtype == np.float64
    from mac.exceptions import InferenceDataValidationError

    with pytest.raises(InferenceDataValidationError, match=r"'generated_text' \(string\) is missing: got \['text'\]$"):
        inf.predict({"text": np.array(["hi"], dtype=object)})


def test_a_user_listener_on_the_shared_base(tmp_path):
    """Users can write their own listener folder the same way (custom column, one scorer)."""
    (tmp_path / "model.py").write_text(
        "from wallaroo_pulumi.scorers import byop\n\n"
        "class Mine(byop.ScorerInference):\n    scorer = 'sentiment'\n    text_field = 'reply'\n"
        "    text_field_env = None\n\n"
        "class MineBuilder(byop.ScorerInferenceBuilder):\n    inference_class = Mine\n"
    )
    inf = load_inference(tmp_path)
    out = inf.predict({"reply": np.array(GOOD, dtype=object)})
    np.testing.assert_allclose(out["sentiment_compound"], S.score_sentiment(GOOD)["sentiment_compound"])


def test_builder_without_scorer_names_the_field(tmp_path):
    (tmp_path / "model.py").write_text(
        "from wallaroo_pulumi.scorers import byop\n\n"
        "class NoScorer(byop.ScorerInference):\n    pass\n\n"
        "class NoScorerBuilder(byop.ScorerInferenceBuilder):\n    inference_class = NoScorer\n"
    )
    with pytest.raises(ModelLoadError, match=r"NoScorer\.scorer: expected a scorer name"):
        load_inference(tmp_path)


def test_validator_carries_the_llm_columns_it_declares():
    from wallaroo_pulumi.adapters.schemas import LLM_OUTPUT_SCHEMA

    vin, vout = listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA)
    assert vin == LLM_OUTPUT_SCHEMA and vout.names[:4] == LLM_OUTPUT_SCHEMA.names
    inf = load_inference(BUILTIN_DIR / "validator")
    out = inf.predict({"generated_text": np.array(["fine", ""], dtype=object),
                       "prompt_tokens": np.array([3, -1]), "completion_tokens": np.array([1, -1]),
                       "error": np.array(["", "openai: HTTP 429 Too Many Requests"], dtype=object)})
    assert list(out) == vout.names
    assert out["error"].tolist() == ["", "openai: HTTP 429 Too Many Requests"]
    assert out["prompt_tokens"].tolist() == [3, -1]
    with pytest.raises(ValueError, match="generated_text"):
        listener_schemas("validator", carry=LLM_OUTPUT_SCHEMA.remove(0))


def test_in_process_listeners_share_one_loader_and_its_one_builder_rule(tmp_path):
    """The in-process executor loads through the sidekick's loader: a folder with two builders is
    refused naming both, and two folders whose files share a name load side by side."""
    import asyncio

    from wallaroo_pulumi.runtime.services.listeners.executor import InProcessExecutor, ListenerModelRef

    two = tmp_path / "two"
    two.mkdir()
    (two / "model.py").write_text(
        "from wallaroo_pulumi.scorers import byop\n\n"
        "class A(byop.ScorerInference):\n    scorer = 'toxicity'\n\n"
        "class ABuilder(byop.ScorerInferenceBuilder):\n    inference_class = A\n\n"
        "class BBuilder(byop.ScorerInferenceBuilder):\n    inference_class = A\n"
    )
    with pytest.raises(ModelLoadError, match=r"found 2 InferenceBuilder subclasses .*ABuilder.*BBuilder.*expected exactly one"):
        asyncio.run(InProcessExecutor(ListenerModelRef(name="two", version="1", model_dir=two)).start())

    async def scores(folder):
        executor = InProcessExecutor(ListenerModelRef(name=folder.name, version="1", model_dir=folder))
        await executor.start()
        return (await executor.predict(pa.table({"text": GOOD}))).column_names

    assert asyncio.run(scores(BUILTIN_DIR / "toxicity")) == ["toxicity"]
    assert asyncio.run(scores(BUILTIN_DIR / "hate")) == ["hate", "offensive"]
    assert asyncio.run(scores(BUILTIN_DIR / "toxicity")) == ["toxicity"]


def test_validator_leaves_a_failed_upstream_row_unscored():
    """With the LLM's `error` column carried: a failed row's scores are null and its error stays."""
    inf = load_inference(BUILTIN_DIR / "validator")
    out = inf.predict({"generated_text": np.array(["", "You are wonderful."], dtype=object),
                       "error": np.array(["openai: HTTP 500 after 4 attempts", ""], dtype=object)})
    assert out["error"].tolist() == ["openai: HTTP 500 after 4 attempts", ""]
    assert out["toxicity"][0] is None and out["sentiment_compound"][0] is None
    assert isinstance(out["toxicity"][1], float) and out["sentiment_compound"][1] > 0.3
    whole = inf.predict({"generated_text": np.array(["ok"], dtype=object), "error": np.array([""], dtype=object)})
    assert whole["toxicity"].dtype == np.float64  # no failed row: the scores as before
