"""Scores for generated text against gold replies, and the held-out loss of a causal LM.

Exact match after an answer extractor, SQuAD-style token F1, ROUGE-L (LCS F-measure), and,
when every gold reply is a JSON object, how often the output parses and matches field by field.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from tunesmith.backends import eval_mode
from tunesmith.data.batching import sorted_batches
from tunesmith.data.chat import Encoded
from tunesmith.data.tokens import TokenSet
from tunesmith.losses import causal_lm_loss


def extract(text: str, pattern: str | None) -> str | None:
    """The answer in a reply: the pattern's first group (else its match), or the stripped reply; None if absent."""
    if pattern is None:
        return text.strip()
    found = re.search(pattern, text)
    if found is None:
        return None
    return (found.group(1) if found.groups() else found.group(0)).strip()


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation: the tokens of token F1 and ROUGE-L."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return text.split()


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the overlapping words (as a bag), as in SQuAD; 1.0 when both are empty."""
    pred, ref = normalize(prediction), normalize(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: the longest common subsequence of words, as precision and recall."""
    pred, ref = normalize(prediction), normalize(reference)
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref):
            current.append(previous[j] + 1 if p == r else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def generation_scores(predictions: Sequence[str], references: Sequence[str], pattern: str | None) -> dict[str, Any]:
    """Mean exact match (after extraction), token F1 and ROUGE-L; JSON validity and field accuracy when the
    gold replies are JSON objects.
    """
    n = len(predictions)
    if n == 0:
        return {"n": 0}
    matches = 0
    for p, r in zip(predictions, references, strict=True):
        answer, gold = extract(p, pattern), extract(r, pattern)
        matches += answer is not None and answer == gold
    scores: dict[str, Any] = {
        "n": n,
        "exact_match": matches / n,
        "token_f1": sum(map(token_f1, predictions, references)) / n,
        "rouge_l": sum(map(rouge_l, predictions, references)) / n,
    }
    golds = [_json_object(r) for r in references]
    if all(g is not None for g in golds):
        parsed = [_json_object(p) for p in predictions]
        scores["json_valid"] = sum(p is not None for p in parsed) / n
        fields = sorted({k for g in golds for k in g})
        scores["json_fields"] = {
            k: sum(p is not None and k in g and p.get(k) == g[k] for p, g in zip(parsed, golds, strict=True)) / n
            for k in fields
        }
    return scores


@torch.inference_mode()
def lm_loss(
    model: torch.nn.Module, samples: Sequence[Encoded], batch_size: int, pad_id: int, keep_logits: bool = False
) -> dict[str, float]:
    """Mean negative log-likelihood per target token over the samples, and its perplexity."""
    device = next(model.parameters()).device
    data = TokenSet(samples, batch_size, 1, 0, pad_id, keep_logits)
    total = torch.zeros((), dtype=torch.float64)
    tokens = 0
    with eval_mode(model):
        for rows in sorted_batches([len(s.ids) for s in samples], batch_size):  # little padding
            batch = {k: v.to(device) for k, v in data.collate(rows).items()}
            labels = batch.pop("labels")
            total += causal_lm_loss(model(**batch, use_cache=False).logits, labels).double().cpu()
            tokens += data.items(rows)
    loss = float(total) / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "target_tokens": tokens}
