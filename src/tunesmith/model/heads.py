"""F_θ: θ̂ loaded as the AutoModelFor* class a task names, and the split into backbone and head.

The backbone is ``model.base_model`` (transformers' own base_model_prefix); the head is
everything else. We never guess the head from module names.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import transformers
from transformers import AutoConfig, PreTrainedModel

from tunesmith.data.labels import LabelSpace
from tunesmith.errors import ConfigError, ModelError
from tunesmith.model.pretrained import ModelSource, check_weights, load_errors, local, quiet_transformers


def auto_class(name: str) -> Any:
    """The transformers AutoModelFor* class of this name (a task names it: tasks/*.py)."""
    return getattr(transformers, name)


def pretrained(
    source: ModelSource,
    model_class: str,
    head: dict[str, Any],
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    random_init: bool = False,
) -> PreTrainedModel:
    """θ̂ as model_class, in fp32, with the task head the head arguments size (a causal LM's own: none).

    A new head is initialised from the global seed (set by the caller). With random_init, the same architecture
    and head start from random weights instead of θ̂. A GGUF-born model is rebuilt from its config (without
    the quantization entry) and given the de-quantised weights: transformers refuses to save_pretrained a
    model it still marks as GGUF.
    """
    cls = auto_class(model_class)
    if not random_init:
        check_weights(source, allow_pickle)
    with load_errors(source), quiet_transformers():
        if random_init:
            config = AutoConfig.from_pretrained(
                source.location, trust_remote_code=trust_remote_code, **source.load_kwargs(), **head
            )
            config.__dict__.pop("quantization_config", None)
            return cls.from_config(config, trust_remote_code=trust_remote_code)
        model = cls.from_pretrained(
            source.location,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle or source.gguf_file else True,
            weights_only=True,  # even allowed pickle may only hold tensors, never code
            dtype=torch.float32,  # train in fp32 master weights; bf16 is autocast's job
            **source.load_kwargs(),
            **head,
        )
        if not source.gguf_file:
            return model
        config = model.config
        config.__dict__.pop("quantization_config", None)
        plain = cls.from_config(config, trust_remote_code=trust_remote_code)
        plain.load_state_dict(model.state_dict())
        plain.generation_config = model.generation_config
        return plain


def load_finetuned(folder: str, model_class: str, labels: LabelSpace | None) -> PreTrainedModel:
    """θ̃ from a run folder; its label map must match the one tunesmith saved."""
    with load_errors(local(folder)), quiet_transformers():
        model = auto_class(model_class).from_pretrained(folder, use_safetensors=True)
    if labels is None:
        return model
    saved = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if saved != list(labels.names):
        raise ModelError(f"{folder}: config.json labels {saved} differ from tunesmith.json labels {list(labels.names)}")
    return model


def takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM's forward accepts logits_to_keep (transformers' LMs do; remote code may not)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def head_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters outside the transformers model's base_model: the task head.

    Works by identity, so it also holds for a model wrapped by peft (whose own base_model differs).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = {id(p) for p in inner.base_model.parameters()}
    return {name for name, p in model.named_parameters() if id(p) not in backbone}


def checkpoint_activations(model: PreTrainedModel, name: str) -> None:
    """Keep only each block's input in the forward pass and recompute the rest in backward (--gradient-checkpointing).

    Non-reentrant: the blocks' weights get gradients even when their inputs need none (frozen embeddings,
    LoRA), and dropout masks are replayed exactly, so the weights come out the same.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"--gradient-checkpointing: {name} does not support it; leave it off")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name since transformers 5.x; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
