"""Subword tokenizer and the small T5 configuration of the product tower's text encoder.

The tokenizer is a Unigram model (the SentencePiece algorithm T5 uses) from the `tokenizers`
library: NFKC + lowercase normalisation, Metaspace pre-tokenisation, and T5's special-token layout
(<pad> = 0, </s> = 1, <unk> = 2) so a `T5Config` with pad/eos/decoder-start ids 0/1/0 fits it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# One definition for training, export and the live catalogue (torch-free, in the serving package).
from upper_fast.products import encode_texts, product_texts

__all__ = [
    "EOS_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "encode_texts",
    "product_texts",
    "small_t5_config",
    "train_tokenizer",
]

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, seed: int = 0, max_texts: int = 500_000
) -> Any:
    """Train a Unigram subword tokenizer on catalog text and queries.

    texts: any iterable of strings (None and empty strings are skipped; duplicates are dropped).
    vocab_size: upper bound on the vocabulary, special tokens included (a small corpus may yield fewer).
    seed / max_texts: when there are more than max_texts distinct texts, a seeded uniform sample of
      max_texts of them is used, so training time stays bounded on large catalogues.
    Returns a `tokenizers.Tokenizer` whose encodings end with </s>.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the subword tokenizer needs tokenizers: pip install upper-fast-train") from exc
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be > {len(SPECIAL_TOKENS)} (the special tokens)")
    corpus = sorted({t for t in texts if t})
    if not corpus:
        raise ValueError("train_tokenizer needs at least one non-empty text")
    if len(corpus) > max_texts:
        pick = np.random.default_rng(seed).choice(len(corpus), size=max_texts, replace=False)
        corpus = [corpus[i] for i in np.sort(pick)]

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    for token, expected in zip(SPECIAL_TOKENS, (PAD_ID, EOS_ID, UNK_ID)):
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(f"tokenizer placed {token} at {tokenizer.token_to_id(token)}, expected {expected}")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)]
    )
    return tokenizer


def small_t5_config(
    vocab_size: int, d_model: int = 128, num_layers: int = 2, num_heads: int = 4, d_ff: int = 256
) -> Any:
    """A small `transformers.T5Config` matching `train_tokenizer`'s special ids.

    d_model must be divisible by num_heads (d_kv = d_model // num_heads).
    """
    try:
        from transformers import T5Config
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the text encoder needs transformers: pip install upper-fast-train") from exc
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        dropout_rate=0.1,
        feed_forward_proj="relu",
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
