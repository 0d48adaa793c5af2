"""Hate speech / offensive language: HateSonar's TF-IDF + logistic regression, run with numpy + scipy.

The weights are read out of the ONNX file HateSonar ships and evaluated as a sparse product
(docs/listeners.md says why); ``onnx_reference_proba`` is the original graph, for the test.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("hate_speech", "offensive_language", "neither")
TOKEN_PATTERN = r"[a-zA-Z0-9_]+"


def model_file() -> Path:
    """The ONNX file inside the installed hatesonar package (no download, ever)."""
    import hatesonar.api

    return Path(hatesonar.api.DEFAULT_MODEL_FILE)


@dataclass
class _Model:
    vectorizer: object  # sklearn CountVectorizer with the fixed vocabulary
    idf: np.ndarray  # (n_features,) float32
    coef_t: object  # scipy.sparse csr (n_features, 3)
    intercepts: np.ndarray  # (3,)


_lock = threading.Lock()
_model: _Model | None = None


def _load() -> _Model:
    import onnx
    import scipy.sparse as sp
    from onnx import helper, numpy_helper
    from sklearn.feature_extraction.text import CountVectorizer

    m = onnx.load(str(model_file()))
    nodes = {n.op_type: n for n in m.graph.node}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}

    def attrs(node):
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    tok = attrs(nodes["Tokenizer"])
    tfidf = attrs(nodes["TfIdfVectorizer"])
    lin = attrs(nodes["LinearClassifier"])
    # Refuse silently-different graphs rather than mis-scoring.
    if tok.get("tokenexp", b"").decode() != TOKEN_PATTERN or tfidf.get("max_gram_length") != 1:
        raise RuntimeError(f"unexpected hatesonar model layout in {model_file()}")
    if tfidf.get("mode", b"TF") != b"TF" or lin.get("post_transform") != b"SOFTMAX":
        raise RuntimeError(f"unexpected hatesonar model layout in {model_file()}")
    if list(lin["classlabels_ints"]) != [0, 1, 2]:
        raise RuntimeError(f"unexpected hatesonar classes in {model_file()}")
    vocab = {s.decode("utf-8"): int(i) for s, i in zip(tfidf["pool_strings"], tfidf["ngram_indexes"], strict=True)}
    n_features = max(vocab.values()) + 1
    idf = inits["idfcst"].astype(np.float64)
    coef = np.asarray(lin["coefficients"], dtype=np.float64).reshape(3, n_features)
    vec = CountVectorizer(
        vocabulary=vocab, token_pattern=TOKEN_PATTERN, lowercase=True, dtype=np.float64
    )
    return _Model(
        vectorizer=vec,
        idf=idf,
        coef_t=sp.csr_matrix(coef.T),
        intercepts=np.asarray(lin["intercepts"], dtype=np.float64),
    )


def model() -> _Model:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = _load()
    return _model


def predict_proba(texts: list[str]) -> np.ndarray:
    """(n, 3) probabilities in CLASSES order."""
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    m = model()
    if len(texts) == 0:
        return np.zeros((0, 3))
    counts = m.vectorizer.transform(texts)  # term frequencies
    x = normalize(counts @ sp.diags(m.idf), norm="l2")
    logits = np.asarray((x @ m.coef_t).todense()) + m.intercepts
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def onnx_reference_proba(texts: list[str]) -> np.ndarray:
    """The original ONNX graph through onnxruntime (locale-free: lowercase in Python instead of
    the StringNormalizer node). Slow; for verification only."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(model_file()))
    g = m.graph
    sn = next(n for n in g.node if n.op_type == "StringNormalizer")
    tok = next(n for n in g.node if n.op_type == "Tokenizer")
    tok.input[0] = sn.input[0]
    g.node.remove(sn)
    zm = next(n for n in g.node if n.op_type == "ZipMap")
    g.node.remove(zm)
    for o in list(g.output):
        if o.name == "output_probability":
            g.output.remove(o)
    g.output.append(onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 3]))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([t.lower() for t in texts], dtype=object)
    return sess.run(["probabilities"], {"text": x})[0].astype(np.float64)


def score(texts: list[str]) -> dict[str, np.ndarray]:
    """``hate`` (P(hate speech)) and ``offensive`` (P(offensive, not hate))."""
    p = predict_proba(texts)
    return {"hate": p[:, 0].copy(), "offensive": p[:, 1].copy()}
