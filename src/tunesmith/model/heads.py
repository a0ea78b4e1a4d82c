"""F_θ: which transformers AutoModelFor* class each task uses, and the split into backbone and head.

The backbone is ``model.base_model`` (transformers' own base_model_prefix); the head is
everything else. We never guess the head from module names.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from tunesmith.data.labels import LabelSpace
from tunesmith.errors import ModelError
from tunesmith.model.pretrained import ModelSource, check_weights, load_errors, quiet_transformers

TASK_MODELS = {"classification": AutoModelForSequenceClassification}


def with_head(
    source: ModelSource,
    task: str,
    labels: LabelSpace,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    random_init: bool = False,
) -> PreTrainedModel:
    """θ̂ plus a freshly initialised task head sized for the label space (seeded by the caller).

    With random_init, the same architecture and head start from random weights instead of θ̂.
    """
    labeled = {
        "num_labels": len(labels),
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "problem_type": "single_label_classification",
    }
    if random_init:
        with load_errors(source), quiet_transformers():
            config = AutoConfig.from_pretrained(source.location, trust_remote_code=trust_remote_code, **labeled)
            return TASK_MODELS[task].from_config(config, trust_remote_code=trust_remote_code)
    check_weights(source, allow_pickle)
    with load_errors(source), quiet_transformers():
        return TASK_MODELS[task].from_pretrained(
            source.location,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            weights_only=True,  # even allowed pickle may only hold tensors, never code
            **labeled,
        )


def load_finetuned(folder: str, task: str, labels: LabelSpace) -> PreTrainedModel:
    """θ̃ from a run folder; its label map must match the one tunesmith saved."""
    source = ModelSource(folder, folder, "local")
    with load_errors(source), quiet_transformers():
        model = TASK_MODELS[task].from_pretrained(folder, use_safetensors=True)
    saved = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if saved != list(labels.names):
        raise ModelError(f"{folder}: config.json labels {saved} differ from tunesmith.json labels {list(labels.names)}")
    return model


def head_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters outside the transformers model's base_model: the task head.

    Works by identity, so it also holds for a model wrapped by peft (whose own base_model differs).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = {id(p) for p in inner.base_model.parameters()}
    return {name for name, p in model.named_parameters() if id(p) not in backbone}
