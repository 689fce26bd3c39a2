"""docT5query-style pre-training of the product tower's text encoder.

A small `T5ForConditionalGeneration` learns to generate, from a product's text, the queries that led
to engagements with it in the training window (Nogueira & Lin's docTTTTTquery, as the UPPER paper
uses it to warm-start the product text encoder). Only the encoder is kept: its state_dict loads
into `transformers.T5EncoderModel(t5_config)`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from upper_fast_train.text import PAD_ID, encode_texts, product_texts

__all__ = ["doc2query_pairs", "pretrain_doc2query"]

log = logging.getLogger(__name__)

ENGAGEMENTS = ("click", "favorite", "add_to_cart", "purchase")


def doc2query_pairs(dataset: Any, train_end: int) -> tuple[list[str], list[str]]:
    """(product text, query) pairs from engagements in the training window, deduplicated.

    dataset: an `upper_fast.data.Dataset` (`.catalog` with product_id, title[, tags]; `.log` with
      timestamp, query, product_id, interaction names). Impressions are not engagements; events whose
      product is not in the catalog are skipped. Pairs are in first-seen order.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    log_t = dataset.log
    in_window = pc.less(log_t.column("timestamp"), pa.scalar(int(train_end), type=pa.int64()))
    engaged = pc.is_in(log_t.column("interaction"), value_set=pa.array(ENGAGEMENTS))
    events = log_t.filter(pc.and_(in_window, engaged))
    rows = pc.index_in(events.column("product_id"), value_set=dataset.catalog.column("product_id"))
    rows_np = rows.fill_null(-1).to_numpy(zero_copy_only=False)
    texts_by_row = product_texts(dataset.catalog)
    seen: set[tuple[int, str]] = set()
    texts: list[str] = []
    queries: list[str] = []
    for row, query in zip(rows_np.tolist(), events.column("query").to_pylist()):
        if row < 0 or not query or (row, query) in seen:
            continue
        seen.add((row, query))
        texts.append(texts_by_row[row])
        queries.append(query)
    return texts, queries


def pretrain_doc2query(
    product_texts: list[str],
    target_queries: list[str],
    tokenizer: Any,
    t5_config: Any,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    max_text_length: int = 64,
    max_query_length: int = 16,
    stats: dict[str, float] | None = None,
    num_threads: int = 0,
) -> dict[str, Any]:
    """Train a T5 to generate target_queries[i] from product_texts[i]; return the encoder weights.

    Returns the state_dict (CPU tensors) of a `T5EncoderModel(t5_config)`. The loss (mean token
    cross-entropy, dropout off) on a fixed probe of up to 256 pairs is logged before and after; when
    `stats` is given it receives loss_before, loss_after, steps and pairs.
    num_threads: torch intra-op threads for this call (restored afterwards); 0 keeps torch's setting.
    On a shared, oversubscribed machine 1 thread can be several times faster than 2 (no spin-waits).
    """
    try:
        import torch
        import transformers  # noqa: F401  (checked here so the error names the extra)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("pre-training needs torch and transformers: pip install upper-fast-train") from exc
    if len(product_texts) != len(target_queries):
        raise ValueError("product_texts and target_queries must have the same length")
    if not product_texts:
        raise ValueError("pretrain_doc2query needs at least one (text, query) pair")
    if steps < 0 or batch_size < 1:
        raise ValueError("steps must be >= 0 and batch_size >= 1")

    previous_threads = torch.get_num_threads()
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        return _train(
            product_texts, target_queries, tokenizer, t5_config, steps, batch_size, lr, seed, device,
            progress, max_text_length, max_query_length, stats,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    product_texts: list[str],
    target_queries: list[str],
    tokenizer: Any,
    t5_config: Any,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    progress: bool,
    max_text_length: int,
    max_query_length: int,
    stats: dict[str, float] | None,
) -> dict[str, Any]:
    import torch
    from transformers import T5EncoderModel, T5ForConditionalGeneration
    from tqdm.auto import tqdm

    src_ids, src_mask = encode_texts(tokenizer, product_texts, max_text_length)
    tgt_ids, _ = encode_texts(tokenizer, target_queries, max_query_length)
    labels = np.where(tgt_ids == PAD_ID, -100, tgt_ids)  # pad positions carry no loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = T5ForConditionalGeneration(t5_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def batch(idx: np.ndarray) -> dict[str, Any]:
        return {
            "input_ids": torch.from_numpy(src_ids[idx]).to(device),
            "attention_mask": torch.from_numpy(src_mask[idx]).to(device),
            "labels": torch.from_numpy(labels[idx]).to(device),
        }

    probe = batch(rng.permutation(len(product_texts))[:256])

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(model(**probe).loss)
        model.train()
        return value

    loss_before = probe_loss()
    order = rng.permutation(len(product_texts))
    cursor = 0
    bar = tqdm(range(steps), desc="doc2query pre-training", disable=not progress, leave=False)
    for _ in bar:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(product_texts)), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        loss = model(**batch(idx)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    loss_after = probe_loss()
    log.info("doc2query pre-training: probe loss %.4f -> %.4f over %d steps", loss_before, loss_after, steps)
    if stats is not None:
        stats.update(
            loss_before=loss_before, loss_after=loss_after, steps=float(steps), pairs=float(len(product_texts))
        )

    encoder = T5EncoderModel(t5_config)
    source = model.state_dict()
    target = encoder.state_dict()
    # The encoder half of the seq2seq model has the same parameter names (shared.*, encoder.*).
    weights = {k: source[k].detach().to("cpu").clone() for k in target}
    encoder.load_state_dict(weights, strict=True)
    return weights
