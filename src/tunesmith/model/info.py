"""`tunesmith info`: what a pretrained model is, without training it.

Loads the bare backbone (AutoModel), so the counts are those of θ̂ before any task head.
"""

from __future__ import annotations

from rich.table import Table
from transformers import AutoModel

from tunesmith.model.pretrained import load_config, load_errors, load_tokenizer, quiet_transformers, resolve


def embedding_parameters(model) -> int:
    """Parameters of the input embeddings (token, position, type): most of a small model, little of its compute."""
    module = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    return sum(p.numel() for p in module.parameters())


def describe(name: str) -> Table:
    """A two-column table of the model's facts."""
    source = resolve(name)
    config = load_config(source)
    tokenizer = load_tokenizer(source)
    with load_errors(source), quiet_transformers():
        model = AutoModel.from_pretrained(source.location, **source.load_kwargs())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    emb = embedding_parameters(model)
    get = lambda *keys: next((getattr(config, k) for k in keys if getattr(config, k, None) is not None), "?")  # noqa: E731
    rows = [
        ("model", f"{name}  ({source.kind}: {source.location})"),
        (
            "architecture",
            ", ".join(config.architectures or [type(model).__name__]) + f"  (model_type {config.model_type})",
        ),
        (
            "layers / hidden / heads",
            f"{get('num_hidden_layers', 'n_layer')} / {get('hidden_size', 'd_model')} / "
            f"{get('num_attention_heads', 'n_head')}",
        ),
        ("parameters", f"{total:,} total, {trainable:,} trainable"),
        ("embeddings", f"{emb:,} ({emb / total:.1%}); {total - emb:,} outside the embeddings"),
        (
            "max length",
            f"{get('max_position_embeddings', 'n_positions')} positions; tokenizer limit "
            f"{tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else 'none'}",
        ),
        (
            "tokenizer",
            f"{type(tokenizer).__name__}, vocabulary {len(tokenizer):,}, padding side {tokenizer.padding_side}",
        ),
    ]
    table = Table(show_header=False, title=f"tunesmith info {name}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table
