"""The answerability gate: does the knowledge base hold the answer to this question, or should the
answer be "not found"?

A single score threshold cannot tell "about something in here" from "about something next to it"
(a question about 银纹笛鲷 when the knowledge base only describes 川纹笛鲷 matches most words). The
gate looks at several signals of the best candidates, each normalised per query so they mean the
same on a 3-document and on a 100,000-document knowledge base:

- coverage: the share of the question's words (IDF-weighted) found in the best chunk, whole
  words and anywhere in a window of three sentences;
- sentence: the share found in one sentence of a best chunk together with its headings (the
  sentence that states what the question asks; a question about a neighbour of the subject finds
  its words spread over several sentences);
- the missing rarest word: how rare (IDF, scaled by the rarest word of the question) the rarest
  question word is that the best chunks lack (a name the knowledge base has never seen);
- BM25 of the best chunk divided by the query's own best possible BM25;
- semantic: the cosine of question and best chunk (multilingual-e5), and how far it stands above
  the other candidates (the query's own spread of similarities).

A logistic model over these features gives a probability that the question is answerable. Its
weights and its decision threshold are fitted by `bench/kb.py --calibrate` on the tuning half of
CMRC 2018 only (paragraphs split by a hash of their id; the validation half is never used) and
shipped in gate.json with that provenance. A knowledge base may override the threshold
(`min_confidence`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATE_FILE = Path(__file__).with_name("gate.json")


@dataclass
class Gate:
    """Standardise features, then a logistic regression; `threshold` on its probability."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    threshold: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def probability(self, values: dict[str, float]) -> float:
        """P(answerable); a feature missing from `values` (not measurable on this query) counts as
        its average on the calibration questions, i.e. as no evidence either way."""
        z = self.bias
        for name, mu, sd, w in zip(self.features, self.mean, self.scale, self.weights, strict=True):
            z += w * (values.get(name, mu) - mu) / sd
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Gate:
        return cls(**{k: data[k] for k in ("features", "mean", "scale", "weights", "bias", "threshold")},
                   provenance=data.get("provenance", {}))


_GATES: dict[str, Gate] = {}


def load_gate(kind: str) -> Gate:
    """The shipped gate for `kind`: "hybrid" (semantic features too) or "lexical" (no vectors)."""
    if not _GATES:
        data = json.loads(GATE_FILE.read_text(encoding="utf-8"))
        for key, value in data.items():
            _GATES[key] = Gate.from_dict(value)
    return _GATES[kind]


def save_gates(gates: dict[str, Gate], path: Path = GATE_FILE) -> None:
    path.write_text(json.dumps({k: g.to_dict() for k, g in gates.items()}, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    _GATES.clear()


def fit_logistic(rows: list[list[float]], labels: list[int], l2: float = 1.0,
                 iterations: int = 50) -> tuple[list[float], list[float], list[float], float]:
    """(mean, scale, weights, bias) of an L2-regularised logistic regression (Newton's method)."""
    import numpy as np

    x = np.asarray(rows, np.float64)
    y = np.asarray(labels, np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    reg = l2 * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (p - y) + reg @ w
        hess = (z * (p * (1 - p))[:, None]).T @ z + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return mean.tolist(), scale.tolist(), w[:-1].tolist(), float(w[-1])
