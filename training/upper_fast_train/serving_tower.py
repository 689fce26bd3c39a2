"""A serving form of the trained query-user tower: the same function, far fewer ONNX nodes.

At batch 1 onnxruntime's cost is per node (about 1-2 us each on this class of CPU), not arithmetic, so
`export_query_tower` exports `LeanQueryTower.from_tower(tower)` instead of the training module. It is
exact algebra on the trained weights (the ONNX parity check against the *training* tower still runs):

* The history transformer's output is read only at the summary token, whose input is a learned
  constant. So its query vector is a constant and each head's attention score for token t is
  `LN1(x_t) . a_head + c_head`: one (h, heads) matrix folded from W_q, W_k, b_k. Tokens enter as
  `u_t = LN1(x_t) - LN1(x_0)` (LN1's bias shifted), so the summary token is u_0 = 0 with score 0 after
  a shift (softmax is shift-invariant) and one `Pad` puts it in. Since the probabilities sum to 1,
  head k's attended value is `(l_0 + sum_{t>0} p_tk u_t) W_v,k^T + b_v,k`: one batched MatMul
  `P^T U` (B, heads, h) on the normalised tokens, then each head's value projection on that single
  row, instead of projecting every token (the per-token value MatMul was the tower's largest node).
  l_0's share, b_v, the out-projection bias and the residual summary vector fold into one bias. The
  feed-forward block runs on that one token. No Q/K/V reshapes, transposes or shape arithmetic on
  the dynamic batch axis remain. The feed-forward block's second bias rides on one constant hidden
  unit, so the residual is one Gemm.
* Term bags: the padding row of the gathered table is zeroed (the training bag masks it, so its value
  never mattered) and the table carries a 0/1 column, so one gather + sum yields the bag's sum and its count of real terms
  (no compare + cast + sum). With learned term weights (`TrainConfig.experimental.term_weights`) that column holds
  each id's weight and the rows are weight x embedding: the same gather + sum gives the weighted sum.
* Small tables absorb what follows them: country embeddings are stored unit-scaled; one item-type
  table holds the type embedding plus the item projection bias and segment vector, each head's score
  bias (the padding mask for type 0) and the user skip's type weight and 0/1 count, split after one
  gather; the history-query bag's 0/1 count column carries the query projection's bias.
* The lexical skip joins the fusion MLP's last layer as extra input columns (one Gemm, not two).
* The user-affinity skip (`TrainConfig.model.user_skip`) is one separate additive term (`_user_tail`):
  a country row (which also carries the last fusion bias) plus the type-weighted mean history graph
  vector times one matrix.
* The output's L2 normalisation is one `LpNormalization` node (`_L2Normalize`).
* `user_vector` / `query_from_user` split the function at what depends on the user only (the
  Retriever caches user vectors; docs/serving.md).

The parts that are not folded are the training tower's own functions (`towers.query_parts`,
`bag_mean`, `unit_scale`, `typed_history_mean`, `blank_user_inputs`, and the fusion split at
`QueryUserTower.query_width`), so a change to one of them changes both towers. Training code never
uses this module; it exists for export only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from upper_fast_train.towers import TERM_WEIGHT_FLOOR, bag_mean, blank_user_inputs, query_parts, typed_history_mean, unit_scale

__all__ = ["LeanQueryTower"]

_MASKED = -1e9  # additive score bias of a padded history token (exp underflows to exactly 0)


class _L2Normalize(torch.autograd.Function):
    """x / max(||x||, 1e-12) over the last axis, exported as one ONNX LpNormalization node (torch's own
    export of the same arithmetic is ReduceL2 + Clip + Div). onnxruntime's kernel returns 0 for a zero
    row, as the clamp does here."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - autograd signature
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:
        return g.op("LpNormalization", x, axis_i=-1, p_i=2)


def _const(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().float().contiguous(), requires_grad=False)


class LeanQueryTower(nn.Module):
    """`LeanQueryTower.from_tower(query_tower)`: same inputs (keywords, the ONNX names), same output."""

    def __init__(self) -> None:  # filled by from_tower
        super().__init__()

    @classmethod
    @torch.no_grad()
    def from_tower(cls, tower: nn.Module) -> LeanQueryTower:
        from upper_fast_train.towers import QueryUserTower

        if not isinstance(tower, QueryUserTower):
            raise TypeError(f"LeanQueryTower needs a QueryUserTower, got {type(tower).__name__}")
        layer = tower.history
        attn = layer.self_attn
        if not layer.norm_first or not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise ValueError("LeanQueryTower supports the pre-norm history layer QueryUserTower builds")
        act = getattr(layer, "activation", F.relu)
        if act in (F.relu, torch.relu) or isinstance(act, nn.ReLU):
            act_name = "relu"
        elif act in (F.gelu,) or isinstance(act, nn.GELU):
            act_name = "gelu"
        else:
            raise ValueError(f"unsupported history activation {act!r}")

        self = cls()
        self.personalized = bool(tower.personalized)
        self.known_queries_only = tower.personalize_known_queries and self.personalized
        self.act_name = act_name
        h = attn.embed_dim
        heads = attn.num_heads
        hd = h // heads
        self.heads = heads

        # (V, E + 1): the term embeddings and a last column of 1 (0 for the padding id), so one
        # gather + sum gives a bag's sum and its count of real terms together.
        # With learned pooling weights (TermBag weighted) the last column holds each id's weight w and
        # the rows are w * embedding, so the same gather + sum gives the weighted sum and sum of weights.
        table = tower.terms.table().detach().float()
        real = tower.terms.pool_weights().detach().float()[:, None]  # 1 (or the learned weight); 0 for padding
        self.term_table = _const(torch.cat([table * real, real], dim=1))
        self.term_dim = int(table.shape[1])

        # History tokens. Items: W_p g + (b_p + type_emb[t] + seg_1); queries: W_q bag + (b_q + seg_2).
        seg = tower.segment.weight
        self.item_w = _const(tower.item_proj.weight.t())
        item_type = tower.item_type.weight + tower.item_proj.bias + seg[1]  # joins item_table below
        # The history-query bag is divided with its count column (1 for a real query, 0 for an empty
        # one), so the projection's extra last row adds the bias (an empty query's token is masked).
        self.hq_w = _const(torch.cat([tower.query_proj.weight.t(), (tower.query_proj.bias + seg[2])[None]]))

        ln1, ln2 = layer.norm1, layer.norm2
        self.ln1_w, self.ln1_eps = _const(ln1.weight), float(ln1.eps)  # ln1_b: below
        self.ln2_w, self.ln2_b, self.ln2_eps = _const(ln2.weight), _const(ln2.bias), float(ln2.eps)

        wq, wk, wv = attn.in_proj_weight.split(h)  # (h, h) each; y = x W^T + b
        bq, bk, bv = attn.in_proj_bias.split(h)
        x0 = (tower.summary.reshape(-1) + seg[0]).float()  # the summary token's input
        l0 = F.layer_norm(x0, (h,), ln1.weight, ln1.bias, ln1.eps)
        q0 = l0 @ wq.t() + bq
        k0 = l0 @ wk.t() + bk
        v0 = l0 @ wv.t() + bv
        select = torch.zeros(h, heads)  # (h, heads): dim d belongs to head d // hd
        select[torch.arange(h), torch.arange(h) // hd] = 1.0
        scale = 1.0 / math.sqrt(hd)
        a = wk.t() @ (q0[:, None] * select) * scale  # (h, heads): score of token t = LN1(x_t) . a + c
        c = (bk * q0) @ select * scale
        s0 = (k0 * q0) @ select * scale
        # Tokens enter as u_t = LN1(x_t) - l0 (LN1's bias shifted), so the summary token is u_0 = 0 and
        # its score is 0 after the shift by s0; one Pad puts both in. Per head k, the attended value
        # is sum_t p_tk LN1(x_t) W_v,k^T + b_v,k = (l0 + sum_{t>0} p_tk u_t) W_v,k^T + b_v,k, and the
        # out-projection is linear, so x = [z_1 .. z_heads] M + out_b with z_k = sum_{t>0} p_tk u_t
        # (one batched MatMul P^T U) and M_k = W_v,k^T W_o,k^T stacked (heads * h, h).
        self.ln1_b = _const(ln1.bias - l0)
        self.score_w = _const(a)
        score_b = l0 @ a + c - s0  # (heads,): the part of every real token's score that u_t lacks
        wo, bo = attn.out_proj.weight, attn.out_proj.bias
        self.value_w = _const(wv.reshape(heads, hd, h).transpose(1, 2))  # (heads, h, hd)
        self.out_w = _const(wo.t())
        self.out_b = _const(v0 @ wo.t() + bo + x0)
        # Score bias per history token: score_b for real items (type > 0) and queries, _MASKED for padding.
        n_types = int(tower.item_type.weight.shape[0])
        item_score_b = score_b.expand(n_types, heads).clone()
        item_score_b[0] = _MASKED  # type 0 = padding
        self.query_score_b = _const(score_b)
        # The feed-forward block gets one extra hidden unit with weight 0 and bias 1, so its output is
        # act(1) > 0 on every row and the second layer's row for it, b_2 / act(1), adds b_2: the
        # residual Gemm then needs no separate bias Add.
        ff1_w, ff1_b = layer.linear1.weight.t(), layer.linear1.bias
        act_one = 1.0 if act_name == "relu" else float(F.gelu(torch.tensor(1.0)))
        self.ff1_w = _const(torch.cat([ff1_w, torch.zeros(h, 1)], dim=1))
        self.ff1_b = _const(torch.cat([ff1_b, torch.ones(1)]))
        self.ff2_w = _const(torch.cat([layer.linear2.weight.t(), (layer.linear2.bias / act_one)[None]]))

        self.country = _const(unit_scale(tower.country.weight))

        fuse0, fuse3 = tower.fuse[0], tower.fuse[3]
        self.fuse1_w, self.fuse1_b = _const(fuse0.weight.t()), _const(fuse0.bias)
        # fuse1's input is [term bag (E), query graph (G), graph mask (1), history (h), country]: the
        # first rows see the query, the rest the user (split by user_vector / query_from_user).
        self.query_rows = int(tower.query_width)
        out_w = fuse3.weight.t()  # (2h, D)
        if tower.lexical is not None:
            out_w = torch.cat([out_w, tower.lexical.weight.t()], dim=0)  # (2h + E, D)
        self.has_lexical = tower.lexical is not None
        self.fuse2_w, self.fuse2_b = _const(out_w), _const(fuse3.bias)

        skip = getattr(tower, "user_skip", None)
        self.has_user_skip = skip is not None
        # Everything keyed by a history item's type, one gather: [type embedding + biases (h) | score
        # bias (heads) | the user skip's type weight (0 for padding) | 1 for a real item, 0 for padding].
        columns = [item_type, item_score_b]
        if skip is not None:
            real = (torch.arange(n_types) > 0).float()[:, None]  # type 0 = padding
            columns += [skip.type_weight.weight * real, real]
            self.uskip_hist = _const(skip.hist.weight.t())  # (G, D)
        self.item_table = _const(torch.cat(columns, dim=1))
        self.item_split = [h, heads] + ([1, 1] if skip is not None else [])
        # What the user adds to the output before normalisation, per country: the skip's country row
        # (if any) plus the last fusion layer's bias, so user_vector's tail is one gather (+ one Gemm).
        n_countries = int(tower.country.weight.shape[0])
        rows = skip.country.weight if skip is not None else torch.zeros(n_countries, int(fuse3.bias.shape[0]))
        self.tail_country = _const(rows + fuse3.bias)  # (countries, D)
        if self.known_queries_only:  # the user vector of blanked inputs, for queries without a graph node
            graph_dim = int(self.item_w.shape[0])
            self.blank_user = _const(self.user_vector(torch.zeros(1, 1, graph_dim), torch.zeros(1, 1, dtype=torch.int64),
                                                      torch.zeros(1, 1, 1, dtype=torch.int64),
                                                      torch.zeros(1, dtype=torch.int64)))
        return self.eval()

    def _user_tail(self, hist_item_graph: torch.Tensor, skip_type: Sequence[torch.Tensor], user_country: torch.Tensor) -> torch.Tensor:
        """(B, D) added to the output before normalisation: the last fusion bias, plus towers.UserSkip
        C[user_country] + H (sum_i w[type_i] g_i / #items) when the tower has it (skip_type: the item
        table's (B, N, 1) type-weight and real-item columns)."""
        tail = F.embedding(user_country, self.tail_country)
        if not self.has_user_skip:
            return tail
        weight, real = skip_type
        return torch.addmm(tail, typed_history_mean(hist_item_graph, weight, real.sum(1)), self.uskip_hist)

    def _bag(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., L) ids -> (mean embedding (..., E), count (..., 1))."""
        summed, count = F.embedding(ids, self.term_table).sum(-2).split([self.term_dim, 1], dim=-1)
        return bag_mean(summed, count), count

    @property
    def user_dim(self) -> int:
        """Width of the user vector: the fusion layer's hidden width plus the output dim D."""
        return int(self.fuse1_w.shape[1] + self.fuse2_w.shape[1])

    def _user_parts(self, hist_item_graph: torch.Tensor, hist_item_type: torch.Tensor, hist_query_terms: torch.Tensor,
                    user_country: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([history summary ; country embedding] (B, h + c), output tail (B, D)) of the user inputs."""
        if not self.personalized:  # the ablation: user inputs blanked, as in the training tower
            hist_item_graph, hist_item_type, hist_query_terms, user_country = blank_user_inputs(
                hist_item_graph, hist_item_type, hist_query_terms, user_country)
        type_emb, item_score_b, *skip_type = F.embedding(hist_item_type, self.item_table).split(self.item_split, dim=-1)
        items = hist_item_graph @ self.item_w + type_emb  # (B, N, h)
        summed = F.embedding(hist_query_terms, self.term_table).sum(-2)  # (B, M, E + 1): [sum ; count]
        count = summed[..., self.term_dim:]
        queries = bag_mean(summed, count) @ self.hq_w  # (B, M, h): mean bag @ W + bias
        tokens = torch.cat([items, queries], dim=1)  # (B, T, h), the summary token excluded
        empty = count < TERM_WEIGHT_FLOOR  # a real term weighs at least exp(-4) > the floor
        bias = torch.cat([item_score_b, torch.where(empty, _MASKED, self.query_score_b)], dim=1)  # (B, T, heads)
        u = F.layer_norm(tokens, (int(tokens.shape[-1]),), self.ln1_w, self.ln1_b, self.ln1_eps)  # LN1(x_t) - l0
        scores = u @ self.score_w + bias  # (B, T, heads), relative to the summary token's
        probs = torch.softmax(F.pad(scores, (0, 0, 1, 0)), dim=1)[:, 1:]  # summary token's score is 0
        z = probs.transpose(1, 2) @ u  # (B, heads, h)
        x = (z.unsqueeze(2) @ self.value_w).flatten(1) @ self.out_w + self.out_b  # summary token after attention + residual
        y = F.layer_norm(x, (int(x.shape[-1]),), self.ln2_w, self.ln2_b, self.ln2_eps) @ self.ff1_w + self.ff1_b
        y = F.relu(y) if self.act_name == "relu" else F.gelu(y)
        x = torch.addmm(x, y, self.ff2_w)  # x + y W_2 + b_2 (b_2 through the constant unit)
        history = unit_scale(x)
        user = torch.cat([history, F.embedding(user_country, self.country)], dim=-1)
        return user, self._user_tail(hist_item_graph, skip_type, user_country)

    def user_vector(
        self,
        hist_item_graph: torch.Tensor,  # (B, N, G) float32
        hist_item_type: torch.Tensor,  # (B, N) int64
        hist_query_terms: torch.Tensor,  # (B, M, Lq) int64
        user_country: torch.Tensor,  # (B,) int64
    ) -> torch.Tensor:
        """(B, user_dim) = [the user's whole contribution to the first fusion layer's pre-activation
        (history summary and country through their rows of its matrix, plus its bias) ; what is added
        to the output before normalisation (the user-affinity skip, if any, plus the last layer's
        bias)]. It depends on the user inputs only, so a server computes it once per user and reuses
        it for every query: `query_from_user(q, user_vector(u))` is `forward(q, u)`."""
        user, tail = self._user_parts(hist_item_graph, hist_item_type, hist_query_terms, user_country)
        return torch.cat([torch.addmm(self.fuse1_b, user, self.fuse1_w[self.query_rows:]), tail], dim=-1)

    def _query_parts(self, query_terms: torch.Tensor, query_graph: torch.Tensor,
                     query_graph_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([term bag ; graph ; graph mask] (B, E + G + 1), the layer-normed term bag (B, E))."""
        parts = query_parts(self._bag(query_terms)[0], query_graph, query_graph_mask)
        return torch.cat(parts, dim=-1), parts[0]

    def _output(self, pre: torch.Tensor, term_bag: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """The last fusion layer (+ lexical skip columns) on the first layer's pre-activation, plus the
        user tail, L2-normalised."""
        hidden = F.gelu(pre)
        if self.has_lexical:
            hidden = torch.cat([hidden, term_bag], dim=-1)
        return _L2Normalize.apply(torch.addmm(tail, hidden, self.fuse2_w))

    def query_from_user(
        self,
        query_terms: torch.Tensor,  # (B, Lq) int64
        query_graph: torch.Tensor,  # (B, G) float32
        query_graph_mask: torch.Tensor,  # (B,) float32
        user_vector: torch.Tensor,  # (B, user_dim) float32, from `user_vector`
    ) -> torch.Tensor:
        """(B, D) L2-normalised query vectors from the query inputs and a precomputed user vector."""
        fused, term_bag = self._query_parts(query_terms, query_graph, query_graph_mask)
        if self.known_queries_only:  # a query without a graph node is answered as if signed out
            user_vector = torch.where(query_graph_mask.unsqueeze(-1) > 0, user_vector, self.blank_user)
        pre, tail = user_vector.split([int(self.fuse1_w.shape[1]), int(self.fuse2_w.shape[1])], dim=-1)
        return self._output(torch.addmm(pre, fused, self.fuse1_w[: self.query_rows]), term_bag, tail)

    def forward(
        self,
        query_terms: torch.Tensor,  # (B, Lq) int64
        query_graph: torch.Tensor,  # (B, G) float32
        query_graph_mask: torch.Tensor,  # (B,) float32
        hist_item_graph: torch.Tensor,  # (B, N, G) float32
        hist_item_type: torch.Tensor,  # (B, N) int64
        hist_query_terms: torch.Tensor,  # (B, M, Lq) int64
        user_country: torch.Tensor,  # (B,) int64
    ) -> torch.Tensor:
        # The whole tower in one piece (one fusion Gemm over both halves, no user-vector concat/split:
        # fewer nodes than composing the two parts); the same function as query_from_user(user_vector).
        if self.known_queries_only:
            return self.query_from_user(query_terms, query_graph, query_graph_mask,
                                        self.user_vector(hist_item_graph, hist_item_type, hist_query_terms, user_country))
        fused, term_bag = self._query_parts(query_terms, query_graph, query_graph_mask)
        user, tail = self._user_parts(hist_item_graph, hist_item_type, hist_query_terms, user_country)
        pre = torch.addmm(self.fuse1_b, torch.cat([fused, user], dim=-1), self.fuse1_w)
        return self._output(pre, term_bag, tail)
