"""The UPPER two-tower model: a product tower and a light query-user tower (docs/design.md "Model I/O").

Graph embeddings are frozen and gathered outside the towers, so the exported query tower holds only
the term table, a 1-layer history transformer and small MLPs. Every op here exports to ONNX: term bags
are masked means over `nn.Embedding` (not `nn.EmbeddingBag`, whose padding handling does not export),
and the history transformer always attends to a learned summary token, so rows with no history at all
(signed-out users, new users) never see an all-masked softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from upper_fast_train.config import TrainConfig, resolve_text_encoder

__all__ = ["bag_mean", "blank_user_inputs", "query_parts", "typed_history_mean", "unit_scale", "TermBag", "UserSkip", "ProductSkip", "ProductTower", "QueryUserTower", "UpperModel", "build_text_encoder", "text_encoder_from_dir", "HIST_ITEM_VECTOR", "PRODUCT_INPUTS", "QUERY_INPUTS"]

QUERY_INPUTS = (
    "query_terms",
    "query_graph",
    "query_graph_mask",
    "hist_item_graph",
    "hist_item_type",
    "hist_query_terms",
    "user_country",
)
# The eighth query-tower input of a model with experimental.history_item_vectors: (B, N, d) float32
# vectors of the history items (zeros on padding).
HIST_ITEM_VECTOR = "hist_item_vector"
PRODUCT_INPUTS = (
    "text_ids",
    "text_mask",
    "product_graph",
    "product_graph_mask",
    "product_terms",
    "shop_country",
    "category",
    "quality_buckets",
)


# Learned term pooling weights (TermBag weighted): logits clamped to [-4, 4], so every real term's
# weight is at least exp(-4) ~ 0.018 and a bag's weight total is either 0 (all padding) or above
# TERM_WEIGHT_FLOOR, which the serving tower uses to tell empty history queries apart.
TERM_LOGIT_BOUND = 4.0
TERM_WEIGHT_FLOOR = 1e-3


class TermBag(nn.Module):
    """Mean of term embeddings over the non-padding ids (id 0 = padding); all-padding bags give zeros.

    type_bounds (word_buckets, word_buckets + bigram_buckets): when given, each embedding is scaled
    by a learned exp(s_type) of its term type (word / bigram / char trigram, from the featurizer's id
    ranges; `TrainConfig.experimental.term_type_scale`), so training can set how much a query's few words weigh
    against its many char trigrams. `table()` folds the scales into the rows for serving.

    row_scale: a fixed (V,) weight buffer multiplies each row (`TrainConfig.model.term_idf_scale`: the
    catalogue idf, set by `set_idf`); `table()` folds it in too.

    sparse: the table's gradient is a sparse tensor over the used rows (`TrainConfig.loop.sparse_term_grads`;
    the trainer then steps it with SparseAdam).

    weighted: the bag is a weighted mean, sum_i w_i e_i / sum_i w_i, with a learned pooling weight per
    id, w = exp(clamp(a_id, -4, 4)), every a starting at 0 (the plain mean; `TrainConfig.experimental.term_weights`),
    so training can weigh a query's rare, telling words above its common words and char trigrams,
    as BM25's idf does, but learned. `pool_weights()` gives the (V,) weights (0 for padding) that the
    serving table folds in.

    Input (..., L) int64; output (..., E) float32.
    """

    def __init__(
        self, vocab_size: int, dim: int, type_bounds: tuple[int, int] | None = None, sparse: bool = False, row_scale: bool = False,
        weighted: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0, sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.weight_logit: nn.Embedding | None = None
        if weighted:
            self.weight_logit = nn.Embedding(vocab_size, 1, padding_idx=0, sparse=sparse)
            nn.init.zeros_(self.weight_logit.weight)
        self.type_bounds = None if type_bounds is None else (int(type_bounds[0]), int(type_bounds[1]))
        self.type_log_scale = nn.Parameter(torch.zeros(3)) if type_bounds is not None else None
        self.row_scale: torch.Tensor | None
        if row_scale:
            self.register_buffer("row_scale", torch.ones(vocab_size))
        else:
            self.row_scale = None

    @torch.no_grad()
    def set_idf(self, doc_terms: np.ndarray) -> None:
        """Set `row_scale` to each id's BM25 idf over the documents (rows) of `doc_terms` (n, L) int64
        (0 = padding; an id counts once per row), divided by the largest, so ids no row has get 1."""
        from upper_fast_train.lexical_teacher import bm25_idf

        if self.row_scale is None:
            raise ValueError("this TermBag was built without row_scale (TrainConfig.model.term_idf_scale false)")
        terms = np.asarray(doc_terms, dtype=np.int64)
        vocab = int(self.row_scale.shape[0])
        if terms.ndim != 2 or (terms.size and (terms.min() < 0 or terms.max() >= vocab)):
            raise ValueError(f"doc_terms must be (n, L) ids in [0, {vocab}); got shape {terms.shape}")
        n = terms.shape[0]
        pairs = np.unique(np.arange(n, dtype=np.int64)[:, None] * vocab + terms)
        df = np.bincount(pairs % vocab, minlength=vocab).astype(np.float64)
        idf = bm25_idf(df, n)
        self.row_scale.copy_(torch.from_numpy(idf / idf.max()).to(self.row_scale))

    def _types(self, ids: torch.Tensor) -> torch.Tensor:
        assert self.type_bounds is not None
        return (ids > self.type_bounds[0]).long() + (ids > self.type_bounds[1]).long()

    def table(self) -> torch.Tensor:
        """(V, E) effective embedding rows (the type scales folded in)."""
        weight = self.embedding.weight
        if self.row_scale is not None:
            weight = weight * self.row_scale.unsqueeze(-1)
        if self.type_log_scale is None:
            return weight
        rows = torch.arange(weight.shape[0], device=weight.device)
        return weight * self.type_log_scale.exp()[self._types(rows)].unsqueeze(-1)

    def pool_weights(self) -> torch.Tensor:
        """(V,) pooling weight of every id: exp(clamp(a, -4, 4)) when weighted, else 1; 0 for padding."""
        vocab = self.embedding.weight.shape[0]
        if self.weight_logit is None:
            w = torch.ones(vocab, device=self.embedding.weight.device)
        else:
            w = self.weight_logit.weight[:, 0].clamp(-TERM_LOGIT_BOUND, TERM_LOGIT_BOUND).exp()
        return w * (torch.arange(vocab, device=w.device) > 0).to(w.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.row_scale is None and self.type_log_scale is None and self.weight_logit is None and ids.numel() \
                and not _exporting():
            return self._plain_bag(ids)
        mask = (ids > 0).to(self.embedding.weight.dtype).unsqueeze(-1)  # (..., L, 1)
        emb = self.embedding(ids)
        if self.row_scale is not None:
            emb = emb * self.row_scale[ids].unsqueeze(-1)
        if self.type_log_scale is not None:
            emb = emb * self.type_log_scale.exp()[self._types(ids)].unsqueeze(-1)
        if self.weight_logit is not None:
            mask = mask * self.weight_logit(ids).clamp(-TERM_LOGIT_BOUND, TERM_LOGIT_BOUND).exp()
        return bag_mean((emb * mask).sum(dim=-2), mask.sum(dim=-2))  # (..., E)

    def _plain_bag(self, ids: torch.Tensor) -> torch.Tensor:
        """The unweighted bag mean through one `F.embedding_bag` sum: the same sums as the masked mean
        in `forward` (padding id 0 is left out of both) without the (..., L, E) gathered rows and their
        mask product, forward and backward, and with the sparse gradient of `nn.Embedding`. Training
        only: the ONNX export traces the masked mean."""
        flat = ids.reshape(-1, ids.shape[-1])  # (N, L)
        real = flat > 0
        counts = real.sum(-1)  # (N,)
        # Only the real ids go in, as one 1-D list with bag offsets: history query bags are mostly
        # padding, and the backward would otherwise expand the gradient to every padded slot first.
        offsets = torch.cumsum(counts, 0) - counts  # (N,) start of each bag
        summed = F.embedding_bag(flat[real], self.embedding.weight, offsets, mode="sum", sparse=self.embedding.sparse)  # (N, E)
        return bag_mean(summed, counts.unsqueeze(-1).to(summed.dtype)).reshape(*ids.shape[:-1], summed.shape[-1])  # (..., E)


def _exporting() -> bool:
    """True while torch.onnx or torch.export / dynamo traces the model (they take the masked-mean bag)."""
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling())


def bag_mean(summed: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """A term bag from its (weighted) sum (..., E) and weight total (..., 1): all-padding bags (total
    0) give 0 / TERM_WEIGHT_FLOOR = 0. Shared by `TermBag` and the serving tower's folded table."""
    return summed / total.clamp_min(TERM_WEIGHT_FLOOR)


def unit_scale(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer norm of one fused part (all-zero rows stay zero), so each part enters the
    fusion MLP at the same scale: raw, the mean-pooled text (norm ~10, nearly the same for every
    product) dwarfed the term bag and graph vector (norm ~0.2-0.4) and the product vectors collapsed.

    One `LayerNormalization` node in the ONNX export (the width is a Python int, so the legacy
    exporter needs no traced shape); written out, it was seven nodes per part and onnxruntime's
    per-node cost dominated the serving tower."""
    return F.layer_norm(x, (int(x.shape[-1]),), eps=1e-5)


def query_parts(term_bag: torch.Tensor, query_graph: torch.Tensor, query_graph_mask: torch.Tensor) -> list[torch.Tensor]:
    """The query's inputs to the query tower's fusion MLP, in order: [unit-scaled term bag (B, E),
    unit-scaled graph vector (B, G) (zeros when unseen), graph mask (B, 1)]. The user's parts follow
    them (`QueryUserTower.query_width` columns in all); the serving tower splits the fusion there."""
    gm = query_graph_mask.unsqueeze(-1)
    return [unit_scale(term_bag), unit_scale(query_graph * gm), gm]


def typed_history_mean(hist_item_graph: torch.Tensor, weight: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, G) sum_i w_i g_i / max(1, #items) of the history items' graph vectors (B, N, G) with their
    type weights (B, N, 1) (0 on padding) and real-item counts (B, 1): `UserSkip`'s history part."""
    return (hist_item_graph * weight).sum(1) / count.clamp_min(1.0)


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


def build_text_encoder(config: TrainConfig, vocab_size: int) -> nn.Module:
    """The product text transformer: a small `T5EncoderModel` (random init; pre-trained weights are
    loaded afterwards) or, when `config.text.text_encoder` is a path, that local HF checkpoint."""
    encoder_dir = resolve_text_encoder(config.text.text_encoder)
    if encoder_dir:
        from transformers import AutoModel

        return AutoModel.from_pretrained(encoder_dir)
    from transformers import T5EncoderModel

    from upper_fast_train.text import small_t5_config

    # The same config as doc2query pre-training, so its encoder state_dict loads as is.
    t5 = small_t5_config(vocab_size, config.text.t5_d_model, config.text.t5_layers, config.text.t5_heads, config.text.t5_d_ff)
    t5.dropout_rate = config.model.dropout
    return T5EncoderModel(t5)


def text_encoder_from_dir(path: str | Path) -> nn.Module:
    """A randomly initialised encoder from a saved HF config (its weights come from model.safetensors):
    `T5EncoderModel` for T5 configs (AutoModel would build the whole encoder-decoder), else AutoModel."""
    from transformers import AutoConfig, AutoModel, T5EncoderModel

    config = AutoConfig.from_pretrained(path)
    if config.model_type in ("t5", "mt5"):
        return T5EncoderModel(config)
    return AutoModel.from_config(config)


class ProductTower(nn.Module):
    """Product text (mean-pooled transformer) + frozen graph vector + shared term bag + shop country
    + category + quantile-bucketed quality features -> MLP -> L2-normalised (B, D)."""

    def __init__(
        self,
        config: TrainConfig,
        terms: TermBag,
        text_encoder: nn.Module,
        n_countries: int,
        n_categories: int,
        n_quality: int,
        lexical: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.terms = terms
        self.lexical = lexical
        self.user_skip = ProductSkip(n_countries, config.graph.graph_dim, config.model.term_dim, config.model.dim) if config.model.user_skip else None
        self.text_encoder = text_encoder
        self.n_quality = n_quality
        self.quality_levels = config.model.quality_buckets + 1  # bucket 0 = missing value
        text_dim = int(text_encoder.config.hidden_size if hasattr(text_encoder.config, "hidden_size") else text_encoder.config.d_model)
        self.country = nn.Embedding(n_countries, config.model.country_dim)
        self.category = nn.Embedding(n_categories, config.model.category_dim)
        self.quality = nn.Embedding(max(1, n_quality) * self.quality_levels, config.model.quality_dim)
        fused = text_dim + config.graph.graph_dim + 1 + config.model.term_dim + config.model.country_dim + config.model.category_dim
        fused += n_quality * config.model.quality_dim
        self.fuse = _mlp(fused, config.model.hidden * 2, config.model.dim, config.model.dropout)

    def pool_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the text encoder's last hidden state over the attention mask: (B, H), in float32 (also
        when the encoder runs under bfloat16 autocast)."""
        hidden = self.text_encoder(input_ids=text_ids, attention_mask=text_mask).last_hidden_state.float()  # (B, Lt, H)
        m = text_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(
        self,
        text_ids: torch.Tensor,  # (B, Lt) int64
        text_mask: torch.Tensor,  # (B, Lt) int64 1/0
        product_graph: torch.Tensor,  # (B, G) float32
        product_graph_mask: torch.Tensor,  # (B,) float32 1/0
        product_terms: torch.Tensor,  # (B, Lp) int64
        shop_country: torch.Tensor,  # (B,) int64
        category: torch.Tensor,  # (B,) int64
        quality_buckets: torch.Tensor,  # (B, F) int64
        text_pooled: torch.Tensor | None = None,  # (B, H) float32: precomputed pool_text (frozen encoder)
    ) -> torch.Tensor:
        text = self.pool_text(text_ids, text_mask) if text_pooled is None else text_pooled
        gm = product_graph_mask.unsqueeze(-1)
        term_bag = unit_scale(self.terms(product_terms))
        parts = [
            unit_scale(text),
            unit_scale(product_graph * gm),
            gm,
            term_bag,
            unit_scale(self.country(shop_country)),
            unit_scale(self.category(category)),
        ]
        if self.n_quality:
            offsets = torch.arange(self.n_quality, device=quality_buckets.device) * self.quality_levels
            parts.append(self.quality(quality_buckets + offsets).flatten(1))  # (B, F * q)
        out = self.fuse(torch.cat(parts, dim=-1))
        if self.lexical is not None:
            out = out + self.lexical(term_bag)
        if self.user_skip is not None:
            out = out + self.user_skip(product_graph * gm, term_bag, shop_country)
        return F.normalize(out, dim=-1)


class UserSkip(nn.Module):
    """The query side of the user-affinity skip (`TrainConfig.model.user_skip`): C[user_country] +
    H (sum_i w[type_i] g_i / #items), the history items' graph vectors g_i averaged with a learned
    weight per interaction type (padding type 0 has weight 0). Added to the query tower's output,
    beside the fusion MLP, so its dot product with `ProductSkip` is a direct user-product affinity."""

    def __init__(self, n_countries: int, graph_dim: int, dim: int) -> None:
        super().__init__()
        self.country = nn.Embedding(n_countries, dim)
        nn.init.normal_(self.country.weight, std=dim**-0.5)
        self.hist = nn.Linear(graph_dim, dim, bias=False)
        self.type_weight = nn.Embedding(5, 1, padding_idx=0)
        with torch.no_grad():
            self.type_weight.weight.fill_(1.0)
            self.type_weight.weight[0].zero_()

    def forward(self, hist_item_graph: torch.Tensor, hist_item_type: torch.Tensor, user_country: torch.Tensor) -> torch.Tensor:
        real = (hist_item_type > 0).unsqueeze(-1)  # (B, N, 1)
        w = self.type_weight(hist_item_type) * real  # (B, N, 1), 0 on padding
        count = (hist_item_type > 0).sum(1, keepdim=True).to(w.dtype)  # (B, 1)
        return self.country(user_country) + self.hist(typed_history_mean(hist_item_graph, w, count))


class ProductSkip(nn.Module):
    """The product side of the user-affinity skip: S[shop_country] + W [graph vector * mask,
    unit-scaled term bag]. Added to the product tower's output."""

    def __init__(self, n_countries: int, graph_dim: int, term_dim: int, dim: int) -> None:
        super().__init__()
        self.country = nn.Embedding(n_countries, dim)
        nn.init.normal_(self.country.weight, std=dim**-0.5)
        self.proj = nn.Linear(graph_dim + term_dim, dim, bias=False)

    def forward(self, graph: torch.Tensor, term_bag: torch.Tensor, shop_country: torch.Tensor) -> torch.Tensor:
        return self.country(shop_country) + self.proj(torch.cat([graph, term_bag], dim=-1))


def blank_user_inputs(*user_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The non-personalised ablation: every user input (history items, types, queries, country)
    times zero inside the graph, rather than the branch dropped, so the ONNX export keeps exactly
    the same seven inputs. Shared by the training tower and its lean serving form."""
    return tuple(x * 0 for x in user_inputs)


class QueryUserTower(nn.Module):
    """Query terms (shared bag) + query graph vector (zeros and mask 0 when unseen) + user history
    (last N engaged products typed by interaction, last M queries) through a 1-layer transformer +
    user country -> MLP -> L2-normalised (B, D). With `personalized=False` (the paper's ablation) the
    user inputs are blanked inside the tower: same architecture, same ONNX signature, no user signal."""

    def __init__(self, config: TrainConfig, terms: TermBag, n_countries: int, lexical: nn.Module | None = None) -> None:
        super().__init__()
        self.terms = terms
        self.lexical = lexical
        self.user_skip = UserSkip(n_countries, config.graph.graph_dim, config.model.dim) if config.model.user_skip else None
        self.personalized = config.model.personalized
        h = config.model.hidden
        self.item_proj = nn.Linear(config.graph.graph_dim, h)
        self.item_type = nn.Embedding(5, h)  # 0 padding, 1..4 interaction codes
        self.query_proj = nn.Linear(config.model.term_dim, h)
        self.segment = nn.Embedding(3, h)  # 0 summary token, 1 product, 2 query
        self.summary = nn.Parameter(torch.zeros(1, 1, h))
        self.history = nn.TransformerEncoderLayer(
            h, config.model.history_heads, dim_feedforward=2 * h, dropout=config.model.dropout, batch_first=True, norm_first=True
        )
        # The key bias of the history attention adds q . b_k to every logit of a query, which the softmax
        # ignores: its gradient is zero but for rounding noise, which Adam scales into full-size steps
        # (its value then varied from run to run with no effect on any output). It is held at its
        # initial zero; the model computes the same function.
        key_keep = torch.ones(3 * h)
        key_keep[h:2 * h] = 0.0
        self.register_buffer("key_bias_keep", key_keep, persistent=False)
        self.history.self_attn.in_proj_bias.register_hook(lambda grad: grad * self.key_bias_keep)
        self.country = nn.Embedding(n_countries, config.model.country_dim)
        self.query_width = config.model.term_dim + config.graph.graph_dim + 1  # the `query_parts` columns of the fusion input
        user_dim = h + config.model.country_dim
        self.fuse = _mlp(self.query_width + user_dim, h * 2, config.model.dim, config.model.dropout)
        self.user_after_norm = bool(config.experimental.user_after_norm)
        self.personalize_known_queries = bool(config.model.personalize_known_queries)
        # objective.distill_rows "blanked" calls forward_blanked after each training forward: only then
        # does the forward keep its query parts for it (`_step_query_parts`).
        self.keeps_query_parts = config.objective.distill_rows == "blanked"
        if not config.experimental.user_fusion:
            # The fusion's user columns start at zero and their gradient is masked, so they stay zero
            # (Adam and decoupled weight decay leave a zero weight with zero gradient at zero): the user
            # reaches the output through the additive skip only, and the ONNX and lean serving towers,
            # which read these weights, need nothing of their own.
            first = self.fuse[0]
            keep = torch.ones_like(first.weight)
            keep[:, self.query_width:] = 0.0
            with torch.no_grad():
                first.weight.mul_(keep)
            self.register_buffer("fusion_keep", keep, persistent=False)  # moves with the tower (.to(device))
            first.weight.register_hook(lambda grad: grad * self.fusion_keep)
        # experimental.history_item_vectors: a second vector per history item as a token term and a
        # typed mean added to the output (zero-initialised: the model starts as one without them).
        self.item_vector_proj: nn.Linear | None = None
        self.item_vector_skip: nn.Linear | None = None
        self.item_vector_type: nn.Embedding | None = None
        if config.experimental.history_item_vectors != "none":
            width = config.experimental.history_vector_dim or config.model.dim
            self.item_vector_proj = nn.Linear(width, h, bias=False)
            self.item_vector_skip = nn.Linear(width, config.model.dim, bias=False)
            nn.init.zeros_(self.item_vector_skip.weight)
            self.item_vector_type = nn.Embedding(5, 1, padding_idx=0)
            with torch.no_grad():
                self.item_vector_type.weight.fill_(1.0)
                self.item_vector_type.weight[0].zero_()

    @property
    def input_names(self) -> tuple[str, ...]:
        """The tower's inputs in ONNX order: QUERY_INPUTS, plus HIST_ITEM_VECTOR when it reads one."""
        return QUERY_INPUTS + ((HIST_ITEM_VECTOR,) if self.item_vector_proj is not None else ())

    def forward(
        self,
        query_terms: torch.Tensor,  # (B, Lq) int64
        query_graph: torch.Tensor,  # (B, G) float32
        query_graph_mask: torch.Tensor,  # (B,) float32
        hist_item_graph: torch.Tensor,  # (B, N, G) float32
        hist_item_type: torch.Tensor,  # (B, N) int64
        hist_query_terms: torch.Tensor,  # (B, M, Lq) int64
        user_country: torch.Tensor,  # (B,) int64
        hist_item_vector: torch.Tensor | None = None,  # (B, N, d) float32, experimental.history_item_vectors
    ) -> torch.Tensor:
        if self.item_vector_proj is not None and hist_item_vector is None:
            raise ValueError(f"this query tower reads {HIST_ITEM_VECTOR!r} (experimental.history_item_vectors): pass "
                             "the history items' vectors")
        if not self.personalized:
            hist_item_graph, hist_item_type, hist_query_terms, user_country = blank_user_inputs(
                hist_item_graph, hist_item_type, hist_query_terms, user_country)
            if hist_item_vector is not None:
                hist_item_vector = hist_item_vector * 0
        elif self.personalize_known_queries and not self.training:
            # model.personalize_known_queries: rows whose query has no graph node get the
            # ablation's blanked user inputs (per row, so one batch may mix both).
            known = (query_graph_mask > 0).to(query_terms.dtype)  # (B,) 1 / 0
            hist_item_graph = hist_item_graph * known.to(hist_item_graph.dtype)[:, None, None]
            hist_item_type = hist_item_type * known[:, None]
            hist_query_terms = hist_query_terms * known[:, None, None]
            user_country = user_country * known
            if hist_item_vector is not None:
                hist_item_vector = hist_item_vector * known.to(hist_item_vector.dtype)[:, None, None]
        b = query_terms.shape[0]
        query_bag, history_bags = self._term_bags(query_terms, hist_query_terms)
        parts = query_parts(query_bag, query_graph, query_graph_mask)
        term_bag = parts[0]
        if self.keeps_query_parts and self.training and torch.is_grad_enabled():  # for forward_blanked of the same step
            self._step_query_parts = (query_terms, query_graph, query_graph_mask, tuple(parts))
        items = self.item_proj(hist_item_graph) + self.item_type(hist_item_type) + self.segment.weight[1]  # (B, N, h)
        if self.item_vector_proj is not None:
            items = items + self.item_vector_proj(hist_item_vector)
        queries = self.query_proj(history_bags) + self.segment.weight[2]  # (B, M, h)
        summary = (self.summary + self.segment.weight[0]).expand(b, 1, -1)  # (B, 1, h)
        tokens = torch.cat([summary, items, queries], dim=1)
        pad = torch.cat(
            [
                torch.zeros_like(hist_item_type[:, :1], dtype=torch.bool),
                hist_item_type == 0,
                (hist_query_terms > 0).sum(-1) == 0,
            ],
            dim=1,
        )  # (B, 1 + N + M), True = ignore
        # A float mask (-inf where padded) keeps the export free of the nested-tensor fast path.
        float_pad = torch.zeros(pad.shape, dtype=tokens.dtype, device=tokens.device).masked_fill(pad, float("-inf"))
        encoded = self.history(tokens, src_key_padding_mask=float_pad)
        parts += [unit_scale(encoded[:, 0]), unit_scale(self.country(user_country))]
        skip = self.user_skip(hist_item_graph, hist_item_type, user_country) if self.user_skip is not None else None
        out = self._head(parts, term_bag, skip)
        if self.item_vector_skip is not None and self.item_vector_type is not None:
            w = self.item_vector_type(hist_item_type) * (hist_item_type > 0).unsqueeze(-1)  # (B, N, 1)
            count = (hist_item_type > 0).sum(1, keepdim=True).to(w.dtype)
            out = out + self.item_vector_skip(typed_history_mean(hist_item_vector, w, count))
        return F.normalize(out, dim=-1)

    def _term_bags(self, query_terms: torch.Tensor, hist_query_terms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query's term bag (B, E) and its history queries' (B, M, E). Training: one `TermBag`
        call over both, so the term table gets one sparse gradient from them, not two to add up
        (each addition of sparse gradients coalesces them: about 12 ms a step at 256-d)."""
        b, m = hist_query_terms.shape[:2]
        if self.training and query_terms.shape[-1] == hist_query_terms.shape[-1]:
            bags = self.terms(torch.cat([query_terms, hist_query_terms.reshape(b * m, -1)]))
            return bags[:b], bags[b:].reshape(b, m, -1)
        return self.terms(query_terms), self.terms(hist_query_terms)

    def forward_blanked(self, query_terms: torch.Tensor, query_graph: torch.Tensor, query_graph_mask: torch.Tensor) -> torch.Tensor:
        """(B, D): what `forward` gives these queries with every user input blanked
        (`blank_user_inputs`, the non-personalised ablation), without the per-row history work.
        Blanked, every history token is padding, so the history encoder sees the summary token alone;
        its encoding, the country part and the user skip are then one vector each for all rows,
        computed once here (with batch 1) and broadcast. Training reads it for the teacher distilled
        into the blanked vector (`objective.blanked_query_scores`).

        The query's own parts (term bag, graph vector, mask) do not depend on the user: when the
        training forward just before was given these very tensors, its parts are reused (one term
        bag, one sparse gradient for the table), and they are used once."""
        shared = self.__dict__.pop("_step_query_parts", None)
        if shared is not None and shared[0] is query_terms and shared[1] is query_graph and shared[2] is query_graph_mask:
            parts = list(shared[3])
        else:
            parts = query_parts(self.terms(query_terms), query_graph, query_graph_mask)
        term_bag = parts[0]
        b = query_terms.shape[0]
        zero = torch.zeros(1, dtype=torch.int64, device=query_terms.device)
        summary = self.history(self.summary + self.segment.weight[0])[:, 0]  # (1, h): attends to itself only
        user = torch.cat([unit_scale(summary), unit_scale(self.country(zero))], dim=-1).expand(b, -1)
        skip = None
        if self.user_skip is not None:  # (1, D): country 0, no history
            skip = self.user_skip(query_graph.new_zeros(1, 1, self.item_proj.in_features), zero[:, None], zero)
        # experimental.history_item_vectors adds nothing here: the typed mean of no items is zero and
        # its map has no bias.
        return F.normalize(self._head(parts + [user], term_bag, skip), dim=-1)

    def _head(self, parts: list[torch.Tensor], term_bag: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """The fusion MLP over the query and user parts, plus the lexical skip of the unit-scaled term
        bag, plus the user skip vector `skip` (after a normalisation with experimental.user_after_norm);
        not yet normalised. Shared by `forward` and `forward_blanked`."""
        out = self.fuse(torch.cat(parts, dim=-1))
        if self.lexical is not None:
            out = out + self.lexical(term_bag)
        if skip is not None:
            if self.user_after_norm:
                out = F.normalize(out, dim=-1)
            out = out + skip
        return out


class UpperModel(nn.Module):
    """Both towers sharing one term table. `forward(query_inputs, product_inputs)` encodes both sides in
    one call so DistributedDataParallel sees a single forward per step."""

    def __init__(
        self,
        config: TrainConfig,
        text_encoder: nn.Module,
        n_countries: int,
        n_categories: int,
        n_quality: int,
    ) -> None:
        super().__init__()
        bounds = (config.featurizer.word_buckets, config.featurizer.word_buckets + config.featurizer.bigram_buckets) if config.experimental.term_type_scale else None
        self.terms = TermBag(config.term_vocab_size, config.model.term_dim, bounds, sparse=config.loop.sparse_term_grads,
                             row_scale=config.model.term_idf_scale, weighted=config.experimental.term_weights)
        # lexical_skip: one linear map W of the unit-scaled term bag added to BOTH towers' outputs, so
        # a score contains t_q' W'W t_p, a learned lexical match through the shared term table that
        # works for queries never seen in training (the tail), beside what the fusion MLPs learn.
        self.lexical = nn.Linear(config.model.term_dim, config.model.dim, bias=False) if config.model.lexical_skip else None
        self.product_tower = ProductTower(config, self.terms, text_encoder, n_countries, n_categories, n_quality, self.lexical)
        self.query_tower = QueryUserTower(config, self.terms, n_countries, self.lexical)

    def forward(
        self, query_inputs: dict[str, torch.Tensor], product_inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (query vectors (B, D), product vectors (P, D)), both L2-normalised."""
        return self.query_tower(**query_inputs), self.product_tower(**product_inputs)

    def size_report(self) -> dict[str, Any]:
        """Parameter counts per tower (the term table is counted once, under `terms`)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        terms = count(self.terms)
        return {
            "terms": terms,
            "product_tower": count(self.product_tower) - terms,
            "query_tower": count(self.query_tower) - terms,
        }
