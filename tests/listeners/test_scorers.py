"""Scorers give the right answers on texts whose answers are known, agree with the packages'
own code paths, and load nothing from the network."""

from __future__ import annotations

import random

import numpy as np
import pytest

from wallaroo_pulumi import scorers as S
from wallaroo_pulumi.scorers import _hate, _profanity, registry, schemas

POSITIVE = "Thank you so much, this answer was wonderful and really helpful!"
NEUTRAL = "The meeting is scheduled for Tuesday at 10 am in room 4."
TOXIC = "Shut up, you stupid fucking idiot, nobody cares about your worthless shit."
HATEFUL = "I hate all those faggots, they are disgusting and should die."
NEGATIVE = "This is terrible, awful and disappointing. I am very sad and angry."


def test_toxicity_known_answers():
    t = S.score_toxicity([POSITIVE, NEUTRAL, TOXIC, HATEFUL])["toxicity"]
    assert t.dtype == np.float64 and t.shape == (4,)
    assert t[0] < 0.2 and t[1] < 0.2
    assert t[2] > 0.9 and t[3] > 0.9
    assert ((t >= 0) & (t <= 1)).all()


def test_profanity_known_answers():
    r = S.score_profanity([POSITIVE, NEUTRAL, TOXIC, "what the f.u.c.k is this", "sh1t happens", "assistant class"])
    assert r["profanity"].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert r["profanity_prob"][2] > 0.9 and r["profanity_prob"][1] < 0.2


def test_hate_known_answers():
    r = S.score_hate([POSITIVE, NEUTRAL, HATEFUL, "what the hell is this bitch doing"])
    assert r["hate"][2] > 0.5 and r["hate"][2] == max(r["hate"])
    assert r["hate"][0] < 0.2 and r["hate"][1] < 0.2
    assert r["offensive"][3] > 0.5  # offensive, not hate
    for k in ("hate", "offensive"):
        assert ((r[k] >= 0) & (r[k] <= 1)).all()


def test_sentiment_known_answers():
    r = S.score_sentiment([POSITIVE, NEUTRAL, NEGATIVE])
    c, n = r["sentiment_compound"], r["sentiment_negative"]
    assert c[0] > 0.5 and abs(c[1]) < 0.1 and c[2] < -0.5
    assert n[0] == 0.0 and n[2] > 0.3
    assert ((c >= -1) & (c <= 1)).all() and ((n >= 0) & (n <= 1)).all()


def test_combined_equals_parts_and_handles_odd_items():
    texts = [POSITIVE, TOXIC, "", None, 42]
    allc = S.score_all(texts)
    assert tuple(allc) == S.columns_for("combined")
    parts = {}
    for name in ("toxicity", "profanity", "hate", "sentiment"):
        parts.update(S.score(texts, name))
    for k, v in parts.items():
        np.testing.assert_allclose(allc[k], v)
    assert all(v.shape == (5,) and v.dtype == np.float64 for v in allc.values())
    assert all(v.shape == (0,) for v in S.score_all([]).values())


def test_unknown_scorer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown scorer 'nope'.*combined"):
        S.get_scorer("nope")


def test_hatesonar_sparse_path_matches_the_onnx_graph():
    texts = [POSITIVE, NEUTRAL, TOXIC, HATEFUL, "", "x", "Straße ÜBER café 123_abc", "RT @user: lol #tag"]
    np.testing.assert_allclose(_hate.predict_proba(texts), _hate.onnx_reference_proba(texts), atol=1e-5)


def test_linear_toxicity_path_matches_the_calibrated_svm():
    rng = random.Random(7)
    words = (POSITIVE + NEUTRAL + TOXIC + HATEFUL + NEGATIVE).split()
    texts = [POSITIVE, NEUTRAL, TOXIC, HATEFUL, NEGATIVE, "", "x", "Straße ÜBER café 123_abc"]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(200)]
    ours = _profanity.svm_proba(texts)
    np.testing.assert_allclose(ours, _profanity.svm_reference_proba(texts), rtol=1e-9, atol=1e-12)
    assert ours.min() < 0.2 < 0.8 < ours.max()  # the corpus spans both classes


def test_fast_wordlist_agrees_with_better_profanity():
    from better_profanity import profanity

    words = [w.strip() for w in _profanity.wordlist_file().read_text().splitlines() if w.strip()]
    rng = random.Random(7)
    filler = "the a hello world assistant class glass bull job blow doggy style 2 girls 1 cup".split()
    seps = [" ", " ", ", ", "-", ".", "_", "! ", "'", " "]
    corpus = [POSITIVE, NEUTRAL, TOXIC, HATEFUL, "", "x", " a", "'fuck'", "f.u.c.k", "a$$hole", "$h1t", "@ss",
              "Straße fuck café", "naïve shit ok", "日本語 bitch 日本", "über-asshole!", "ça va, merde"]
    for _ in range(600):
        n = rng.randint(1, 8)
        toks = [rng.choice(words) if rng.random() < 0.15 else rng.choice(filler) for _ in range(n)]
        toks = [
            "".join(rng.choice("@*4") if c == "a" and rng.random() < 0.3 else c for c in t) for t in toks
        ]
        corpus.append("".join(t + rng.choice(seps) for t in toks).rstrip() if rng.random() < 0.5 else
                      "".join(t + rng.choice(seps) for t in toks))
    fast = _profanity.contains(corpus)
    slow = np.array([1.0 if profanity.contains_profanity(t) else 0.0 for t in corpus])
    mismatches = [corpus[i] for i in np.flatnonzero(fast != slow)]
    assert not mismatches, mismatches[:10]
    assert 0 < fast.sum() < len(corpus)


def test_model_files_ship_inside_the_packages():
    import profanity_check

    assert _hate.model_file().is_file()
    assert _profanity.wordlist_file().is_file()
    from importlib import resources

    assert (resources.files(profanity_check) / "data" / "model.joblib").is_file()


def test_schemas_match_scorer_columns():
    for name in schemas.LISTENERS:
        inp, out = schemas.listener_schemas(name)
        assert inp.names == ["text"]
        assert out.names == list(S.columns_for(name))
        assert all(str(f.type) == "double" for f in out)
    vin, vout = schemas.listener_schemas("validator")
    assert vin.names == ["generated_text"] and vout.names[0] == "generated_text"
    with pytest.raises(ValueError, match="unknown listener"):
        schemas.listener_schemas("bogus")


def test_listener_lists_derive_from_the_registry():
    assert schemas.LISTENERS == registry.LISTENERS == tuple(S.SCORERS)
    assert registry.BUILTINS == (*registry.LISTENERS, registry.VALIDATOR)
    assert registry.listener_scorer("validator") == "combined" and registry.listener_scorer("hate") == "hate"
    combined = [c for part in ("toxicity", "profanity", "hate", "sentiment") for c in S.columns_for(part)]
    assert list(S.columns_for("combined")) == combined
    for name, scorer in S.SCORERS.items():
        assert scorer.name == name and tuple(scorer(["x", None])) == scorer.columns
