"""The training loop: preparation (tokenizer, graph, doc2query pre-training), then AdamW over the
multi-part hinge with three negative sources, checkpoints, resume, and torchrun data parallelism.

Run directory layout: docs/design.md "Training run directory".
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from upper_fast_train.config import TrainConfig, resolve_text_encoder
from upper_fast_train.features import ProductTable, TrainingSet, Vocab, build_vocab, product_table, training_set
from upper_fast_train.losses import (hinge_loss, negative_hinge, personal_contrast, shown_pairwise_hinge, softmax_contrast,
                                     softmax_distill)
from upper_fast_train.pseudo_queries import with_pseudo_queries
from upper_fast_train.negatives import DynamicPool, excluded_products, hardest, membership, negative_weights, own_positive_mask, sample_uniform
from upper_fast_train.towers import UpperModel, _unit_scale, build_text_encoder, text_encoder_from_dir

__all__ = ["train", "train_model", "resolve_device", "encode_product_rows", "save_model", "build_model", "pooled_text_vectors"]

_PHASES = ("data", "mining", "forward", "backward", "optimizer")


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available (the local rank's GPU under torchrun), else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(name)


def _to(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def build_model(config: TrainConfig, text_vocab: int, vocab: Vocab, text_encoder: torch.nn.Module | None = None) -> UpperModel:
    """A fresh UpperModel for `config` (the text encoder built from config unless given)."""
    encoder = text_encoder if text_encoder is not None else build_text_encoder(config, text_vocab)
    return UpperModel(config, encoder, vocab.n_countries, vocab.n_categories, len(vocab.quality_columns))


def save_model(model: torch.nn.Module, path: Path) -> None:
    """safetensors, with the shared term table stored once."""
    from safetensors.torch import save_model as _save

    _save(model, str(path))


@torch.no_grad()
def encode_product_rows(
    model: UpperModel, products: ProductTable, rows: np.ndarray, device: torch.device, batch_size: int = 512
) -> np.ndarray:
    """Product vectors of catalog rows (P,) int64 -> (P, D) float32, without grad."""
    was_training = model.training
    model.eval()
    out = np.zeros((len(rows), model.product_tower.fuse[-1].out_features), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        out[start : start + len(part)] = model.product_tower(**_to(products.take(part), device)).float().cpu().numpy()
    model.train(was_training)
    return out


def _cache_key(encoder: torch.nn.Module, text_ids: np.ndarray, text_mask: np.ndarray) -> str:
    """sha1 of the encoder weights and the token ids / masks (the pooled vectors' inputs)."""
    import hashlib

    h = hashlib.sha1()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(text_ids).tobytes())
    h.update(np.ascontiguousarray(text_mask).tobytes())
    return h.hexdigest()


@torch.no_grad()
def pooled_text_vectors(
    model: UpperModel, products: ProductTable, device: torch.device, cache_dir: str | Path | None = None, batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """(n, H) float32 mean-pooled text-encoder output of every product (frozen encoder, eval mode).

    Rows are encoded in order of length with each batch trimmed to its longest row (padding is masked,
    so the result is the same). With cache_dir, the matrix is read from / written to
    cache_dir/text_pooled-<sha1 of encoder weights + token ids>.npy.
    """
    return pool_token_rows(model, products.text_ids, products.text_mask, device, cache_dir, batch_size, progress=progress)


@torch.no_grad()
def pool_token_rows(
    model: UpperModel, text_ids: np.ndarray, text_mask: np.ndarray, device: torch.device,
    cache_dir: str | Path | None = None, batch_size: int = 256, prefix: str = "text_pooled", progress: bool = False,
) -> np.ndarray:
    """`pooled_text_vectors` of any token rows (n, Lt); all-padding rows give zeros."""
    tower = model.product_tower
    n = len(text_ids)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{prefix}-{_cache_key(tower.text_encoder, text_ids, text_mask)}.npy"
        if path.exists():
            out = np.load(path)
            if out.shape[0] == n:
                return out
    was_training = tower.text_encoder.training
    tower.text_encoder.eval()
    lengths = text_mask.sum(1)
    order = np.argsort(-lengths, kind="stable")
    order = order[lengths[order] > 0]
    width_h = int(tower.text_encoder.config.hidden_size if hasattr(tower.text_encoder.config, "hidden_size") else tower.text_encoder.config.d_model)
    out = np.zeros((n, width_h), dtype=np.float32)
    from tqdm.auto import tqdm

    desc = "encode product texts" if prefix == "text_pooled" else "encode teacher queries"
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        rows = order[start : start + batch_size]
        width = max(1, int(lengths[rows].max()))
        ids = torch.from_numpy(np.ascontiguousarray(text_ids[rows, :width])).to(device)
        mask = torch.from_numpy(np.ascontiguousarray(text_mask[rows, :width])).to(device)
        out[rows] = tower.pool_text(ids, mask).float().cpu().numpy()
    tower.text_encoder.train(was_training)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, out)
        os.replace(tmp, path)
    return out


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


def _seed_all(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def _blank_graph(inputs: dict[str, np.ndarray], name: str, drop: np.ndarray) -> None:
    """Graph dropout: zero inputs[name] (B, G) and inputs[name + "_mask"] (B,) on the rows where drop."""
    inputs[name] = np.where(drop[:, None], np.float32(0), inputs[name]).astype(np.float32)
    inputs[name + "_mask"] = np.where(drop, np.float32(0), inputs[name + "_mask"]).astype(np.float32)


def negative_groups(data: TrainingSet, idx: np.ndarray, config: TrainConfig) -> np.ndarray:
    """(B,) int64 group keys of the batch rows `idx`: rows of one group share their positives, so no
    negative of a row is a product its group engaged with in the batch. The group is the query row
    (`config.negatives.exclude_query_positives`, the default) or the query-user."""
    return data.queries.event_query[idx] if config.negatives.exclude_query_positives else data.groups[idx]


def _row_products(scores: torch.Tensor, rows: np.ndarray, columns: np.ndarray,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of per-row products (rows (B, K) catalog rows, -1 = none) given their step columns in
    order (`columns`: the `inverse` slice of rows[rows >= 0]): ((B, K) scores, (B, K) valid)."""
    ok = rows >= 0
    cols = np.zeros(rows.shape, dtype=np.int64)
    cols[ok] = columns
    return scores.gather(1, torch.from_numpy(cols).to(device)), torch.from_numpy(ok).to(device)


def lexical_columns(data: TrainingSet, idx: np.ndarray, has_teacher: np.ndarray, excluded_sets: np.ndarray,
                    config: TrainConfig) -> np.ndarray:
    """(B, K) int64 teacher-mined catalog rows per batch row (TrainConfig.experimental.distill_bm25_negatives; -1 =
    none): the row's query's `data.bm25_top`, kept only for rows that take part in the distillation
    (positive rows whose query has an encoder teacher vector, `has_teacher` (nq,) bool, or any
    positive row when the teacher has BM25 in it) and without the row's own group positives
    (`excluded_sets`, `negatives.excluded_products`), which are columns already."""
    if data.bm25_top is None:
        raise ValueError("distill_bm25_negatives > 0 needs TrainingSet.bm25_top (train() fills it)")
    qrows = data.queries.event_query[idx]
    lexical = data.bm25_top[qrows].copy()
    takes_part = data.labels[idx] > 0
    if config.experimental.distill_bm25 == 0:
        takes_part &= np.asarray(has_teacher, dtype=bool)[qrows]
    lexical[~takes_part] = -1
    lexical[membership(lexical, excluded_sets)] = -1
    return lexical


def _step_loss(
    model: torch.nn.Module,
    data: TrainingSet,
    products: ProductTable,
    idx: np.ndarray,
    step: int,
    weights: dict[str, float],
    pool: DynamicPool | None,
    config: TrainConfig,
    device: torch.device,
    timing: dict[str, float],
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch: encode queries and every needed product in one forward, return the total loss."""
    t0 = time.perf_counter()
    core = model.module if hasattr(model, "module") else model
    q_np = data.queries.take(idx, products.product_graph, config.model.personalized)
    drop_rng = np.random.default_rng([config.loop.seed, step, 17])  # graph dropout draws, seeded by step
    if config.graph.query_graph_dropout > 0:
        _blank_graph(q_np, "query_graph", drop_rng.random(len(idx)) < config.graph.query_graph_dropout)
    q_in = _to(q_np, device)
    pos_rows = torch.from_numpy(data.product_rows[idx])
    labels = torch.from_numpy(data.labels[idx])
    groups = torch.from_numpy(negative_groups(data, idx, config))
    excluded = own_positive_mask(pos_rows, groups, labels)  # (B, B)
    need_sets = (weights["uniform"] > 0 or (pool is not None and weights["dynamic"] > 0) or config.objective.contrast_weight > 0
                 or teacher is not None)
    excluded_sets = excluded_products(pos_rows, groups, labels) if need_sets else None
    gen = torch.Generator().manual_seed(config.loop.seed * 1_000_003 + step)
    uni_rows = sample_uniform(len(products), config.negatives.uniform_negatives, gen) if weights["uniform"] > 0 else torch.zeros(0, dtype=torch.int64)
    t1 = time.perf_counter()
    timing["data"] += t1 - t0

    mined = np.zeros((len(idx), 0), dtype=np.int64)
    if pool is not None and weights["dynamic"] > 0 and config.negatives.dynamic_negatives > 0:
        if pool.due(step):
            pool.refresh(step, lambda rows: encode_product_rows(core, products, rows, device))
        with torch.no_grad():
            q_now = core.query_tower(**q_in).float().cpu().numpy()
        mined = pool.mine(np.ascontiguousarray(q_now), excluded_sets, config.negatives.dynamic_negatives)
    t2 = time.perf_counter()
    timing["mining"] += t2 - t1

    lexical = np.zeros((len(idx), 0), dtype=np.int64)
    if teacher is not None and config.experimental.distill_bm25_negatives > 0:
        assert excluded_sets is not None
        lexical = lexical_columns(data, idx, teacher[1].cpu().numpy(), excluded_sets, config)
    shown = None
    if config.objective.shown_negatives > 0 and config.objective.shown_weight > 0 and data.shown_rows is not None:
        shown = data.shown_rows[idx].copy()  # (B, K) catalog rows, -1 = none
        shown[shown == pos_rows.numpy()[:, None]] = -1  # a product the row itself engaged with
    all_rows = np.concatenate([pos_rows.numpy(), uni_rows.numpy(), mined[mined >= 0],
                               shown[shown >= 0] if shown is not None else np.zeros(0, np.int64), lexical[lexical >= 0]])
    unique, inverse = np.unique(all_rows, return_inverse=True)
    inv = torch.from_numpy(inverse).to(device)
    b, u = len(idx), len(uni_rows)
    p_np = products.take(unique)
    if config.graph.product_graph_dropout > 0:
        _blank_graph(p_np, "product_graph", drop_rng.random(len(unique)) < config.graph.product_graph_dropout)
    q, p = model(q_in, _to(p_np, device))  # (B, D), (R, D)
    scores = q @ p.T  # (B, R)
    arange = torch.arange(b, device=device)
    pos_scores = scores[arange, inv[:b]]
    loss = hinge_loss(pos_scores, labels.to(device), config.objective.thresholds)
    parts = {"hinge": float(loss.detach())}
    if config.objective.personal_contrast > 0:
        # candidates: products engaged in the batch with the row's query; targets: by its query-user
        same_query = torch.from_numpy(data.queries.event_query[idx])
        candidates = (own_positive_mask(pos_rows, same_query, labels) & (labels > 0)[:, None]).to(device)  # logged negatives: no row
        personal = data.personal_groups if data.personal_groups is not None else data.groups
        targets = own_positive_mask(pos_rows, torch.from_numpy(personal[idx]), labels).to(device)
        pc_scores = scores[:, inv[:b]]
        if config.objective.personal_contrast_skip_only and core.query_tower.user_skip is not None:
            # U(user) . P(product) of the user-affinity skip alone; the shared term table detached
            user_vec = core.query_tower.user_skip(q_in["hist_item_graph"], q_in["hist_item_type"], q_in["user_country"])
            pin = _to(products.take(pos_rows.numpy()), device)
            gm = pin["product_graph_mask"].unsqueeze(-1)
            with torch.no_grad():
                bag = _unit_scale(core.terms(pin["product_terms"]))
            prod_vec = core.product_tower.user_skip(pin["product_graph"] * gm, bag, pin["shop_country"])
            pc_scores = (user_vec @ prod_vec.T) * config.objective.personal_temperature  # unnormalised: divided by T below, so T cancels
        term = personal_contrast(pc_scores, candidates, targets, config.objective.personal_temperature)
        loss = loss + config.objective.personal_contrast * term
        parts["personal"] = float(term.detach())
    if config.objective.contrast_weight > 0 or teacher is not None:
        # every step column that is one of the row's group positives is no negative of the row
        forbidden = torch.from_numpy(membership(unique, excluded_sets)).to(device)  # (B, R)
    own_lexical = None
    if lexical.size and bool((lexical >= 0).any()):
        # each row's own teacher-mined columns: no negatives of its contrast or hinge (unjudged matches)
        own_lexical = torch.from_numpy(membership(unique, lexical)).to(device)  # (B, R); -1 pads match nothing
    if config.objective.contrast_weight > 0:
        row_w = None
        if config.experimental.contrast_type_weights:
            table = torch.tensor([0.0, *config.experimental.contrast_type_weights], dtype=scores.dtype)
            row_w = table[labels.clamp(0, 4)].to(device)  # label 0 (a logged negative) takes no part anyway
        c_forbidden = forbidden if own_lexical is None else forbidden | own_lexical
        term = softmax_contrast(scores, inv[:b], c_forbidden, config.objective.contrast_temperature, (labels > 0).to(device), row_w)
        loss = loss + config.objective.contrast_weight * term
        parts["contrast"] = float(term.detach())
    if teacher is not None:
        t_query, t_has, t_product = teacher  # (nq, H) unit rows, (nq,) bool, (n_products, H) unit rows
        q_np_rows = data.queries.event_query[idx]
        qrows = torch.from_numpy(q_np_rows).to(device)
        t_logits = t_query[qrows] @ t_product[torch.from_numpy(unique).to(device)].T / config.objective.distill_temperature  # (B, R)
        rows = t_has[qrows]
        if config.experimental.distill_bm25 > 0:
            from upper_fast_train.lexical_teacher import bm25_scores

            bm = torch.from_numpy(bm25_scores(data.bm25_products, data.bm25_queries, q_np_rows, unique)).to(device)
            t_logits = t_logits * rows[:, None] + config.experimental.distill_bm25 * bm
            rows = torch.ones_like(rows)
        rows = rows & (labels > 0).to(device)
        term = softmax_distill(scores, t_logits, inv[:b], forbidden, config.objective.contrast_temperature, 1.0, rows)
        loss = loss + config.objective.distill_weight * term
        parts["distill"] = float(term.detach())
    theta_neg = config.objective.thresholds[0]
    if weights["inbatch"] > 0 and config.negatives.inbatch_negatives > 0:
        s, valid = hardest(scores[:, inv[:b]], excluded.to(device), config.negatives.inbatch_negatives)
        term = negative_hinge(s, valid, theta_neg)
        loss = loss + weights["inbatch"] * term
        parts["inbatch"] = float(term.detach())
    if u:
        valid = torch.from_numpy(~membership(uni_rows.numpy(), excluded_sets)).to(device)
        term = negative_hinge(scores[:, inv[b : b + u]], valid, theta_neg)
        loss = loss + weights["uniform"] * term
        parts["uniform"] = float(term.detach())
    n_mined = int((mined >= 0).sum())
    if mined.shape[1]:
        s, ok = _row_products(scores, mined, inverse[b + u : b + u + n_mined], device)
        term = negative_hinge(s, ok, theta_neg)
        loss = loss + weights["dynamic"] * term
        parts["dynamic"] = float(term.detach())
    if shown is not None:
        s, ok = _row_products(scores, shown, inverse[b + u + n_mined :], device)
        term = shown_pairwise_hinge(pos_scores, s, ok, config.objective.shown_margin)
        loss = loss + config.objective.shown_weight * term
        parts["shown"] = float(term.detach())
    timing["forward"] += time.perf_counter() - t2
    return loss, parts


def _teacher_vectors(
    model: UpperModel, data: TrainingSet, products: ProductTable, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distillation teacher (TrainConfig.objective.distill_weight): unit mean-pooled text-encoder vectors of
    the query rows that have token rows (data.query_text_ids) and of every product, and the (nq,)
    mask of query rows with a teacher."""
    if data.query_text_ids is None or data.query_text_mask is None:
        raise ValueError("distill_weight > 0 needs TrainingSet.query_text_ids / query_text_mask (train() fills them)")
    if config.experimental.distill_bm25 > 0 and (data.bm25_products is None or data.bm25_queries is None):
        raise ValueError("distill_bm25 > 0 needs TrainingSet.bm25_products / bm25_queries (train() fills them)")
    if len(data.query_text_ids) != len(data.queries.query_terms):
        raise ValueError("query_text_ids must have one row per query row of data.queries")
    q = pool_token_rows(model, data.query_text_ids, data.query_text_mask, device, config.text.text_cache_dir,
                        prefix="query_pooled", progress=config.loop.progress)
    p = products.text_pooled if products.text_pooled is not None else pooled_text_vectors(
        model, products, device, config.text.text_cache_dir, progress=config.loop.progress)
    unit = lambda x: torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), dim=-1).to(device)  # noqa: E731
    has = torch.from_numpy(data.query_text_mask.sum(1) > 0).to(device)
    return unit(q), has, unit(p)


def distill_token_rows(
    strings: list[str], tokenizer: Any, config: TrainConfig, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(nq, Lt) token ids / mask of the query strings that get a distillation teacher: the
    `config.objective.distill_queries` with the most training rows (`counts` (nq,); ties in a seeded random
    order; all when 0); the other rows are all padding."""
    from upper_fast_train.text import encode_texts

    n = len(strings)
    chosen = np.arange(n)
    if 0 < config.objective.distill_queries < n:
        tie = np.random.default_rng([config.loop.seed, 23]).random(n)
        rank = np.lexsort((tie, -(counts if counts is not None else np.zeros(n))))
        chosen = np.sort(rank[: config.objective.distill_queries])
    ids = np.zeros((n, config.text.text_max_len), np.int64)
    mask = np.zeros((n, config.text.text_max_len), np.int64)
    ids[chosen], mask[chosen] = encode_texts(tokenizer, [strings[i] for i in chosen], config.text.text_max_len)
    return ids, mask


def _epoch_order(n: int, epoch: int, seed: int, d: _Dist) -> np.ndarray:
    """This rank's example order for an epoch: one seeded permutation, padded to a multiple of the
    world size and split round-robin (DistributedSampler's scheme)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if d.world > 1:
        pad = (-n) % d.world
        order = np.concatenate([order, order[:pad]])[d.rank :: d.world]
    return order


def train_model(
    model: UpperModel,
    data: TrainingSet,
    products: ProductTable,
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `model` in place on prepared arrays. Returns metrics (steps, examples/s, step-time
    breakdown in seconds, mean loss per epoch). Works alone or under torchrun (DDP)."""
    from tqdm.auto import tqdm

    device = resolve_device(config.loop.device)
    d = _init_distributed(device)
    _seed_all(config.loop.seed)
    model.to(device)
    t_encode = time.perf_counter()
    if config.text.freeze_text_encoder:
        model.product_tower.text_encoder.requires_grad_(False)
        if products.text_pooled is None:
            products.text_pooled = pooled_text_vectors(model, products, device, config.text.text_cache_dir,
                                                       progress=config.loop.progress)
    if config.model.term_idf_scale:  # before any checkpoint load (which restores the same values)
        model.terms.set_idf(products.product_terms)
    text_encode_s = time.perf_counter() - t_encode
    teacher = None
    t_teacher = time.perf_counter()
    if config.objective.distill_weight > 0:
        teacher = _teacher_vectors(model, data, products, config, device)
    teacher_s = time.perf_counter() - t_teacher
    net: torch.nn.Module = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = build_optimizer(model, config)
    steps_per_epoch = max(1, math.ceil(math.ceil(len(data) / d.world) / config.loop.batch_size))
    total = steps_per_epoch * config.loop.epochs
    if config.loop.max_steps:
        total_run = min(total, config.loop.max_steps)
    else:
        total_run = total
    step = 0
    pool = DynamicPool(len(products), config, seed=config.loop.seed) if config.negatives.dynamic_negatives > 0 else None
    if resume and checkpoint_dir is not None and (checkpoint_dir / "state.json").exists():
        step = _load_checkpoint(checkpoint_dir, model, optimizer, pool, device)
    timing = dict.fromkeys(_PHASES, 0.0)
    history: list[dict[str, float]] = []
    examples = 0
    start = time.perf_counter()
    bar = tqdm(total=total_run, initial=step, desc="training", disable=not (config.loop.progress and d.main), dynamic_ncols=True)
    model.train()
    while step < total_run:
        epoch, offset = divmod(step, steps_per_epoch)
        order = _epoch_order(len(data), epoch, config.loop.seed, d)
        idx = order[offset * config.loop.batch_size : (offset + 1) * config.loop.batch_size]
        if len(idx) == 0:
            step += 1
            continue
        weights = negative_weights(step, total, config)
        for group in optimizer.param_groups:
            group["lr"] = group_lr(group, step, total, config)
        before = dict(timing)
        loss, parts = _step_loss(net, data, products, idx, step, weights, pool, config, device, timing, teacher)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        optimizer.step()
        t2 = time.perf_counter()
        timing["backward"] += t1 - t0
        timing["optimizer"] += t2 - t1
        step += 1
        examples += len(idx) * d.world
        phases = {f"{k}_s": timing[k] - before[k] for k in _PHASES}
        history.append({"step": step, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"], **parts, **{f"w_{k}": v for k, v in weights.items()}, **phases})
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", ex_s=f"{examples / max(elapsed, 1e-9):.0f}")
        if checkpoint_dir is not None and d.main and (
            (config.loop.checkpoint_every and step % config.loop.checkpoint_every == 0) or step % steps_per_epoch == 0 or step == total_run
        ):
            _save_checkpoint(checkpoint_dir, model, optimizer, pool, step, config)
    bar.close()
    elapsed = time.perf_counter() - start
    epoch_loss = [
        float(np.mean([h["loss"] for h in history if (h["step"] - 1) // steps_per_epoch == e]))
        for e in sorted({(h["step"] - 1) // steps_per_epoch for h in history})
    ]
    return {
        "steps": step,
        "steps_this_run": len(history),
        "total_steps": total,
        "examples_this_run": examples,
        "seconds": elapsed,
        "text_encode_s": text_encode_s,  # the frozen encoder's pooled product texts (before the loop)
        "teacher_s": teacher_s,  # the distillation teacher's query vectors (before the loop)
        "examples_per_s": examples / elapsed if elapsed > 0 else 0.0,
        "step_time_s": {k: v / max(1, len(history)) for k, v in timing.items()},
        "world_size": d.world,
        "device": str(device),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "epoch_loss": epoch_loss,
        "loss_history": history[:: max(1, len(history) // 200)],
    }


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Multiplier of `TrainConfig.loop.lr` at optimizer step `step` (0-based) of `total` (`lr_schedule`)."""
    if schedule == "constant":
        return 1.0
    progress = min(1.0, step / max(1, total))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {schedule!r}")


class SplitOptimizer:
    """AdamW for the dense parameters plus SparseAdam for the sparse-gradient embedding tables
    (`TrainConfig.loop.sparse_term_grads`), stepped together. `param_groups` lists both optimizers' groups
    (the trainer sets every group's lr); the state dict holds both under "dense" / "sparse"."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer) -> None:
        self.dense = dense
        self.sparse = sparse

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.dense.param_groups + self.sparse.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dense.load_state_dict(state_dict["dense"])
        self.sparse.load_state_dict(state_dict["sparse"])


def _term_table_ids(model: torch.nn.Module) -> set[int]:
    """ids of the shared term table's per-row parameters (the embedding rows and, with term_weights,
    the pooling-weight logits): the parameters `TrainConfig.loop.term_lr_scale` applies to."""
    core = model.module if hasattr(model, "module") else model
    terms = getattr(core, "terms", None)
    if terms is None:
        return set()
    rows = [terms.embedding] + ([terms.weight_logit] if terms.weight_logit is not None else [])
    return {id(m.weight) for m in rows if m.weight.requires_grad}


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer | SplitOptimizer:
    """AdamW over the trainable parameters; with `sparse_term_grads`, the sparse embedding tables
    go to a SparseAdam instead (same lr and betas, no weight decay) inside a `SplitOptimizer`.

    Every param group carries "term_table" (True for the group of the term table's rows): the
    trainer sets its lr to lr x schedule x `term_lr_scale`, the others' to lr x schedule. The table
    gets a group of its own only when its scale is not 1 (so older checkpoints keep resuming)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    sparse_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse and m.weight.requires_grad
    }
    table_ids = _term_table_ids(model)
    dense = [p for p in trainable if id(p) not in sparse_ids]
    table_lr = config.loop.lr * config.loop.term_lr_scale
    if config.loop.term_lr_scale != 1.0 and any(id(p) in table_ids for p in dense):
        groups = [{"params": [p for p in dense if id(p) not in table_ids], "term_table": False},
                  {"params": [p for p in dense if id(p) in table_ids], "term_table": True, "lr": table_lr}]
    else:
        groups = [{"params": dense, "term_table": False}]
    adamw = torch.optim.AdamW(groups, lr=config.loop.lr, weight_decay=config.loop.weight_decay)
    if not sparse_ids:
        return adamw
    sparse = [p for p in trainable if id(p) in sparse_ids]
    tagged = [{"params": sparse, "term_table": all(id(p) in table_ids for p in sparse), "lr": table_lr}]
    return SplitOptimizer(adamw, torch.optim.SparseAdam(tagged, lr=config.loop.lr))


def group_lr(group: dict[str, Any], step: int, total: int, config: TrainConfig) -> float:
    """The learning rate of one param group at `step`: lr x the schedule's factor, x term_lr_scale for
    the term table's group."""
    scale = config.loop.term_lr_scale if group.get("term_table", False) else 1.0
    return config.loop.lr * scale * lr_factor(step, total, config.loop.lr_schedule)


def _save_checkpoint(path: Path, model: UpperModel, optimizer: torch.optim.Optimizer | SplitOptimizer, pool: DynamicPool | None, step: int, config: TrainConfig) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, path / "model.safetensors")
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    if pool is not None:
        np.savez(path / "pool.npz", rows=pool.rows, vectors=pool.vectors, last_refresh=pool.last_refresh)
    config.to_json(path / "config.json")
    (path / "state.json").write_text(json.dumps({"step": step}))


def _load_checkpoint(path: Path, model: UpperModel, optimizer: torch.optim.Optimizer | SplitOptimizer, pool: DynamicPool | None, device: torch.device) -> int:
    from safetensors.torch import load_model

    state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    saved_sparse = set(state) == {"dense", "sparse"}  # a SplitOptimizer's state dict
    if saved_sparse != isinstance(optimizer, SplitOptimizer):  # checked before anything is loaded
        raise ValueError(
            f"{path} was saved with sparse_term_grads {'on' if saved_sparse else 'off'}; resume it with "
            f"sparse_term_grads {str(saved_sparse).lower()} (the setting a run was started with must stay for its resumes)"
        )
    load_model(model, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(state)
    if pool is not None and (path / "pool.npz").exists():
        with np.load(path / "pool.npz") as z:
            pool.rows = z["rows"]
            pool.vectors = z["vectors"]
            pool.last_refresh = int(z["last_refresh"])
        pool.position[:] = -1
        pool.position[pool.rows] = np.arange(len(pool.rows))
    return int(json.loads((path / "state.json").read_text())["step"])


def train(
    dataset: Any, run_dir: str | Path, config: TrainConfig | None = None, resume: bool = False, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """Train UPPER on `dataset` (an `upper_fast.data.Dataset` with meta["train_end"]) into `run_dir`.

    Prepares (on rank 0 under torchrun; the others load the results): the subword tokenizer, frozen
    graph embeddings, doc2query pre-training of the text encoder; then trains and writes the run
    directory (docs/design.md). resume=True continues from run_dir/checkpoint. data_dir, when given,
    is recorded as config.json["data_dir"] (so `upper-fast eval RUN` finds the data). Returns the metrics.
    """
    from upper_fast import Featurizer, StringIdMap

    config = config or TrainConfig()
    if "train_end" not in dataset.meta:
        raise ValueError('dataset.meta has no "train_end": the training window is timestamp < train_end')
    _check_trainable(dataset, config)  # before anything is written
    t_start = time.perf_counter()
    run = Path(run_dir)
    if config.text.freeze_text_encoder and config.text.text_cache_dir is None:
        # The pooled product texts are the costliest part of a run with a pretrained encoder: keep
        # them with the run, so evaluation and export read them instead of encoding again.
        config = config.replace(text_cache_dir=str(run.resolve() / "text_cache"))
    device = resolve_device(config.loop.device)
    d = _init_distributed(device)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint"
    _seed_all(config.loop.seed)
    prep: dict[str, Any] = {}
    if d.main:
        prep = _prepare(dataset, run, config, resume)
    d.barrier()

    from tokenizers import Tokenizer

    from upper_fast_train.graph import GraphEmbeddings

    featurizer = Featurizer(config.featurizer)
    tokenizer = Tokenizer.from_file(str(run / "tokenizer.json"))
    graph = GraphEmbeddings.load(run / "graph.npz")
    vocab = Vocab.from_json(run / "vocab.json")
    t0 = time.perf_counter()
    product_ids = StringIdMap([str(p) for p in dataset.catalog.column("product_id").to_pylist()])
    products = product_table(dataset.catalog, tokenizer, featurizer, vocab, graph, config)
    data = training_set(with_pseudo_queries(dataset, config), product_ids, featurizer, vocab, graph, config)
    if config.objective.distill_weight > 0:
        assert data.queries.strings is not None
        counts = np.bincount(data.queries.event_query, minlength=len(data.queries.strings))
        data.query_text_ids, data.query_text_mask = distill_token_rows(data.queries.strings, tokenizer, config, counts)
        if config.experimental.distill_bm25 > 0 or config.experimental.distill_bm25_negatives > 0:
            from upper_fast_train.lexical_teacher import bm25_matrices, bm25_top_rows
            from upper_fast_train.text import product_texts

            data.bm25_products, data.bm25_queries = bm25_matrices(product_texts(dataset.catalog), data.queries.strings)
            if config.experimental.distill_bm25_negatives > 0:
                data.bm25_top = bm25_top_rows(data.bm25_products, data.bm25_queries, config.experimental.distill_bm25_negatives,
                                              progress=config.loop.progress and d.main)
    featurize_s = time.perf_counter() - t0

    encoder = text_encoder_from_dir(run / "text_encoder")
    model = build_model(config, tokenizer.get_vocab_size(), vocab, encoder)
    if (ckpt / "encoder_init.safetensors").exists():
        from safetensors.torch import load_file

        model.product_tower.text_encoder.load_state_dict(load_file(str(ckpt / "encoder_init.safetensors")))
    metrics = train_model(model, data, products, config, checkpoint_dir=ckpt, resume=resume)
    if d.main:
        save_model(model, run / "model.safetensors")
        metrics.update(prep)
        metrics.update(
            total_s=time.perf_counter() - t_start,  # preparation, featurizing, encoding and the loop
            featurize_s=featurize_s,
            n_examples=len(data),
            n_positive=int((data.labels > 0).sum()),
            n_products=len(products),
            simulated=bool(dataset.meta.get("simulated", False)),
            parameters=model.size_report(),
        )
        (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
        _write_config(run, config, tokenizer.get_vocab_size(), vocab, graph, len(products), data_dir)
        # Catalog row order of graph.npz, so a run can encode any later catalog by product id.
        (run / "product_ids.json").write_text(json.dumps([str(p) for p in dataset.catalog.column("product_id").to_pylist()]))
    d.barrier()
    return metrics


def _check_trainable(dataset: Any, config: TrainConfig) -> None:
    """A clear error for a run that cannot train: no engagement in the training window, or a text
    encoder that is not there."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from upper_fast.interactions import ENGAGEMENTS

    log = dataset.log
    in_window = pc.less(log.column("timestamp"), pa.scalar(int(dataset.meta["train_end"]), pa.int64()))
    engaged = pc.is_in(log.column("interaction"), value_set=pa.array(ENGAGEMENTS))
    if not pc.any(pc.and_(in_window, engaged)).as_py():
        raise ValueError(f"the training window (timestamp < train_end = {dataset.meta['train_end']}) has no engagement "
                         f"rows ({', '.join(ENGAGEMENTS)}): the model learns from engagements, impressions alone teach it "
                         "nothing. Check the log's interaction column and train_end in dataset.json")
    resolve_text_encoder(config.text.text_encoder)


def _write_config(
    run: Path, config: TrainConfig, text_vocab: int, vocab: Vocab, graph: Any, n_products: int, data_dir: str | Path | None
) -> None:
    from upper_fast import __version__

    values = config.to_dict()
    values["run"] = dict(  # what this run derived from its data (not settings: from_dict ignores them)
        term_vocab_size=config.term_vocab_size,
        text_vocab_size=text_vocab,
        n_countries=vocab.n_countries,
        n_categories=vocab.n_categories,
        n_quality=len(vocab.quality_columns),
        graph_dim=graph.dim,
        n_products=n_products,
        package_version=__version__,
        data_dir=str(Path(data_dir).resolve()) if data_dir is not None else None,
    )
    (run / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True))
    theta = config.objective.thresholds
    names = ("negative", "click", "favorite", "add_to_cart", "purchase")
    (run / "thresholds.json").write_text(json.dumps(dict(zip(names, theta)), indent=1))


def _prepare(dataset: Any, run: Path, config: TrainConfig, resume: bool) -> dict[str, Any]:
    """Tokenizer, vocab, graph embeddings, text-encoder config and pre-trained weights, written to
    `run` (kept as they are when resuming)."""
    import pyarrow.compute as pc

    from upper_fast_train.graph import train_graph_embeddings
    from upper_fast_train.text import product_texts, train_tokenizer

    ckpt = run / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    if resume and (run / "graph.npz").exists() and (run / "tokenizer.json").exists():
        return {}
    out: dict[str, Any] = {}
    train_end = int(dataset.meta["train_end"])
    t0 = time.perf_counter()
    encoder_dir = resolve_text_encoder(config.text.text_encoder)
    if encoder_dir:
        src = Path(encoder_dir) / "tokenizer.json"
        if not src.exists():
            raise ValueError(f"{encoder_dir} has no tokenizer.json (a Hugging Face fast tokenizer is needed)")
        shutil.copyfile(src, run / "tokenizer.json")
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(src))
    else:
        window = dataset.log.filter(pc.less(dataset.log.column("timestamp"), train_end))
        texts = product_texts(dataset.catalog) + window.column("query").to_pylist()
        tokenizer = train_tokenizer(texts, vocab_size=config.text.tokenizer_vocab, seed=config.loop.seed)
        tokenizer.save(str(run / "tokenizer.json"))
    out["tokenizer_s"] = time.perf_counter() - t0

    build_vocab(dataset, config).to_json(run / "vocab.json")
    t0 = time.perf_counter()
    graph = train_graph_embeddings(
        dataset,
        train_end,
        dim=config.graph.graph_dim,
        seed=config.loop.seed,
        walks_per_node=config.graph.graph_walks_per_node,
        epochs=config.graph.graph_epochs,
        progress=config.loop.progress,
        workers=config.graph.graph_workers,
        featurizer_config=config.featurizer,
        word_weight=config.graph.graph_word_weight,
    )
    graph.save(run / "graph.npz")
    out["graph_s"] = time.perf_counter() - t0

    encoder = build_text_encoder(config, tokenizer.get_vocab_size())
    encoder.config.save_pretrained(run / "text_encoder")
    if not config.text.text_encoder and config.text.pretrain:
        from safetensors.torch import save_file

        from upper_fast_train.pretrain import doc2query_pairs, pretrain_doc2query
        from upper_fast_train.text import small_t5_config

        t0 = time.perf_counter()
        texts, queries = doc2query_pairs(dataset, train_end)
        if len(texts) > config.text.pretrain_max_pairs:
            pick = np.sort(np.random.default_rng(config.loop.seed).choice(len(texts), config.text.pretrain_max_pairs, replace=False))
            texts, queries = [texts[i] for i in pick], [queries[i] for i in pick]
        stats: dict[str, float] = {}
        steps = max(1, config.text.pretrain_epochs * len(texts) // 32)
        state = pretrain_doc2query(
            texts,
            queries,
            tokenizer,
            small_t5_config(tokenizer.get_vocab_size(), config.text.t5_d_model, config.text.t5_layers, config.text.t5_heads, config.text.t5_d_ff),
            steps=steps,
            batch_size=32,
            seed=config.loop.seed,
            device=str(resolve_device(config.loop.device)),
            progress=config.loop.progress,
            max_text_length=config.text.text_max_len,
            stats=stats,
        )
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(ckpt / "encoder_init.safetensors"))
        out["pretrain"] = {**stats, "seconds": time.perf_counter() - t0}
    elif config.text.text_encoder:
        from safetensors.torch import save_file

        save_file({k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}, str(ckpt / "encoder_init.safetensors"))
    return out
