"""Every hyperparameter of a training run, in one JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "INTERACTIONS"]

# Interaction codes shared by every part (docs/design.md): 0 = none / logged negative.
INTERACTIONS: dict[str, int] = {"impression": 0, "click": 1, "favorite": 2, "add_to_cart": 3, "purchase": 4}


@dataclass
class TrainConfig:
    """Hyperparameters of `upper_fast_train.train`. Defaults train the simulated marketplace in minutes
    on 2 CPU cores; every field is written to RUN/config.json and read back by `load_run`."""

    # Loop.
    epochs: int = 1
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when present, else cpu), "cpu", "cuda", "cuda:1", ...
    progress: bool = True
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end of each epoch
    max_steps: int = 0  # stop after this many optimizer steps (0 = run all epochs); for tests and benches
    # Learning-rate schedule over all epochs' steps (max_steps does not stretch it): "constant" (lr
    # throughout, as before), "linear" (lr down to 0 at the last step) or "cosine" (half a cosine
    # down to 0). Set from the global step, so a resumed run continues the same curve.
    lr_schedule: str = "constant"
    # The term table's rows (and learned term weights) train at lr x term_lr_scale, the rest at lr.
    # Adam moves a row by about lr per update, and with SparseAdam a rare word's row is updated only
    # on the few steps that use it (a title word in 6 pseudo-queries: 18 updates in 3 epochs), so at
    # lr 1e-3 it ends within ~0.02 of its random start (std term_dim^-0.5 ~ 0.09). 1.0 = one lr.
    term_lr_scale: float = 1.0

    # Model.
    dim: int = 128
    personalized: bool = True
    term_dim: int = 64
    hidden: int = 128  # width of the history transformer and the fusion MLPs
    history_heads: int = 4
    history_items: int = 10  # N: last N engaged products
    history_queries: int = 5  # M: last M queries
    # Training histories are taken strictly before the start of the event's search session: events of
    # one signed-in user for one query with gaps of at most this many seconds. A purchase's own
    # click and add_to_cart seconds earlier would otherwise sit in its history (the evaluation and
    # serving see a search before any of its engagements); a model then learns to copy the history.
    # 0 = strictly before each event's own timestamp.
    history_session_gap_s: int = 1800
    country_dim: int = 16
    category_dim: int = 16
    quality_dim: int = 8
    quality_buckets: int = 8  # quantile buckets per numeric quality feature
    dropout: float = 0.0
    # A shared linear map of the term bag added to both towers' outputs (towers.UpperModel): a direct
    # lexical-match channel. Runs written before this field existed load with it off.
    lexical_skip: bool = True
    # User-affinity skip (towers.UserSkip / ProductSkip): the query tower adds U(user) = C[user_country]
    # + H (mean of the history items' graph vectors, weighted per interaction type), the product tower
    # adds P(product) = S[shop_country] + W [graph vector, term bag], so a score contains
    # U(user) . P(product): country x shop country (domestic taste), country x title words (a
    # country's style taste), history x product graph/terms, outside the fusion MLPs. No new inputs.
    # Runs written before this field existed load with it off.
    user_skip: bool = True
    # Learned term-type scales (towers.TermBag): each term embedding is multiplied by exp(s) of its
    # type (word, bigram, char trigram; 3 parameters) before the bag's mean. Without them every term
    # weighs the same, so a short query's ~15 char trigrams outvote its 2 words ("lay in ground"
    # retrieves "Playground"). Folded into the term table for serving (no extra ONNX node). Off by
    # default; runs written before this field existed load with it off.
    term_type_scale: bool = False
    # sparse_term_grads: the term table (V x term_dim, most of the model's weights) gets sparse
    # gradients and its own torch.optim.SparseAdam, so a step's backward and optimizer touch only the
    # rows of the batch's terms, not all V rows (AdamW's cost grows with the bucket counts). SparseAdam
    # is lazy (a row's moments move only on steps that use it) and applies no weight decay to the
    # table. A training setting only: the model and its export are the same either way.
    sparse_term_grads: bool = False
    # term_idf_scale: each term's embedding row is multiplied by a fixed weight, its catalogue BM25
    # idf log(1 + (N - df + 0.5) / (df + 0.5)) over the products' term ids divided by the largest
    # (terms no product has get 1), so a bag's mean leans on its rare words, as BM25 does, rather than
    # on "for"/"with" and the char trigrams every title shares. Set from the training catalogue at
    # the start of training, stored with the weights, folded into the served table (no ONNX change).
    term_idf_scale: bool = False
    # term_weights: the term bags become weighted means with one learned pooling weight per term id,
    # exp(a_id) (a clamped to [-4, 4], starting at 0 = the plain mean; towers.TermBag), shared by
    # both towers like the table itself, so training learns which terms a bag should lean on (a
    # learned idf) instead of the fixed idf above or the three type scales. Folded into the served
    # table's count column (no extra ONNX node). Stepped with the table (SparseAdam when
    # sparse_term_grads). Off by default; runs written before this field existed load with it off.
    term_weights: bool = False

    # Text encoder: None = a small T5 trained from scratch (after doc2query pre-training) with our own
    # subword tokenizer; a path = any local Hugging Face encoder checkpoint with its tokenizer.
    text_encoder: str | None = None
    text_max_len: int = 32
    t5_d_model: int = 128
    t5_layers: int = 2
    t5_heads: int = 4
    t5_d_ff: int = 256
    tokenizer_vocab: int = 8000
    pretrain: bool = True
    pretrain_epochs: int = 1
    pretrain_max_pairs: int = 4000
    # Frozen text encoder: its weights get no gradient and its mean-pooled output is computed once per
    # product (no grad, eval mode) at the start of training and by `load_run(...).encode_products`,
    # so a step trains only the term table, embeddings and fusion MLPs (with a MiniLM product tower a
    # step otherwise re-encodes ~800 sequences with grad). The saved weights are the encoder's own,
    # so the exported bundle is the same model. text_cache_dir: optional folder where those pooled
    # vectors are kept as .npy, keyed by a hash of the encoder weights and the token ids, for reuse
    # across runs (None = recompute each time).
    freeze_text_encoder: bool = False
    text_cache_dir: str | None = None

    # Graph embeddings (frozen in the main training).
    graph_dim: int = 64
    # Graph dropout (training only): the share of batch rows whose query graph vector (and mask) is
    # blanked, and of the step's products whose graph vector is. Unseen queries and new products have
    # no graph node at serving time (all Home Depot dev queries are unseen), while every training
    # query and positive has one; 0 = off (the default, as before).
    query_graph_dropout: float = 0.0
    product_graph_dropout: float = 0.0
    # Word nodes in the graph (graph.py): each catalog product is also linked to the words of its
    # title and tags with this edge weight, so graph vectors (and hence user histories, which are
    # graph vectors) carry style / material / colour, not only the concept, and every catalog
    # product has one. 0 = off (the query-product graph alone, as before).
    graph_word_weight: float = 1.0
    graph_workers: int = 2  # gensim skip-gram threads; 1 = bit-reproducible (and polite on a shared machine)
    # Random walks started per graph node and skip-gram epochs over them. The defaults suit logs of a
    # few thousand nodes; with word nodes and many products (Home Depot with title pseudo-queries:
    # about 252,000 nodes) 10 walks x 5 epochs cost over 20 minutes on one core, and 2 x 1 is a
    # quick graph for runs that drop it anyway (query/product_graph_dropout 1.0).
    graph_walks_per_node: int = 10
    graph_epochs: int = 5

    # Featurizer (hashed term ids shared by both towers). Smaller than the serving default so the
    # shared term table (vocab x term_dim) trains quickly on CPU.
    word_buckets: int = 32768
    bigram_buckets: int = 32768
    trigram_buckets: int = 16384
    max_query_terms: int = 32
    max_product_terms: int = 64

    # Multi-part hinge thresholds on the cosine: [negative, click, favorite, add_to_cart, purchase].
    thresholds: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.55, 0.6, 0.65])
    # Off by default: impressions are products the engine showed for the query, i.e. mostly relevant
    # ones. Pushing them below theta_neg fights the positives of the same queries; on the simulated
    # marketplace it collapsed every product vector onto one point (mean pairwise cosine 0.99) and
    # left training-window recall near random. Turn on only for logs whose impressions are true negatives.
    impressions_as_negatives: bool = False
    impression_sample: float = 0.25  # seeded share of logged impressions kept as examples when they are used

    # Negatives: how many per row from each source, and their weight schedule.
    # True: no negative of a row is a product that ANY row of the batch with the same (normalised)
    # query engaged with (another user's purchase for "necklace" is not a negative for mine). False:
    # only the row's own query-user's engagements are excluded; then head queries, which fill a
    # batch with rows of one query, push their own relevant products apart (see docs/training.md).
    exclude_query_positives: bool = True
    # Personal contrast (losses.personal_contrast): weight of a within-query softmax that ranks, for each
    # row, the products its own query-user engaged with above the ones OTHER users engaged with for the
    # same query in the batch (temperature `personal_temperature` on the cosine). The only loss term
    # that orders one query's relevant products per user; 0 = off.
    personal_contrast: float = 0.0
    personal_temperature: float = 0.1
    # True: the personal contrast scores only the user-affinity skip (U(user) . P(product), user_skip
    # on), with the shared term table detached, so it trains the skip path alone and never pushes
    # the main towers' relevance of other users' positives down.
    personal_contrast_skip_only: bool = False
    # Shown negatives (losses.shown_pairwise_hinge): per engagement row, up to `shown_negatives`
    # products the same search showed and the searcher did NOT engage with (the log's impressions of
    # that request: same user or signed-out country, same normalised query, the latest impression
    # time <= the engagement's, at most `shown_window_s` earlier). Relative, not absolute: each costs
    # max(0, shown_margin - (s_pos - s_shown)), weighted by `shown_weight`. It orders one search's
    # shown products by what this searcher chose, the per-user signal the absolute hinge never sees
    # (impressions as absolute negatives collapse the towers: see impressions_as_negatives). 0 = off;
    # logs without impressions simply have none. Measured in docs/training.md ("Shown negatives").
    shown_negatives: int = 4
    shown_weight: float = 1.0
    shown_margin: float = 0.1
    shown_window_s: int = 7200
    # Softmax contrast (losses.softmax_contrast, an addition to the paper's hinge): weight of an
    # InfoNCE term over every product column of the step (the batch's positives, the uniform and the
    # mined negatives; each row's group positives are never its negatives) at temperature
    # `contrast_temperature` on the cosine. The hinge terms stop pulling once a positive clears its
    # threshold; this one keeps ranking it above the negatives. 0 = off (the default).
    contrast_weight: float = 0.0
    contrast_temperature: float = 0.05
    # Graded contrast: per-row weights of the softmax contrast by the row's engagement type, listed
    # [click, favorite, add_to_cart, purchase] (e.g. [1, 2, 3, 4]: a purchase row pulls its product up
    # four times as hard as a click row; the weighted mean keeps the term's scale). Empty = every
    # positive row weighs the same (the default).
    contrast_type_weights: list[float] = field(default_factory=list)
    # MiniLM-teacher distillation (losses.softmax_distill, training only): weight of KL(teacher ||
    # student) between softmaxes over the same step columns as the softmax contrast, the teacher's
    # scores being cos(E(query), E(title)) with E the product tower's own (pre-trained) text encoder,
    # mean-pooled (sentence-transformers pooling; all-MiniLM-L6-v2 with text_encoder set to it). The
    # query tower stays the term bag: the teacher only shapes its training. distill_queries: how many
    # distinct training query strings get a teacher vector (those with the most rows; 0 = all), encoded once
    # (cached in text_cache_dir); rows of the others skip the term. distill_temperature is the
    # teacher's; the student's is contrast_temperature. 0 = off (the default).
    distill_weight: float = 0.0
    distill_temperature: float = 0.05
    distill_queries: int = 0
    # BM25 in the teacher (lexical_teacher.py; needs distill_weight > 0): the teacher's logits become
    # cos / distill_temperature + distill_bm25 * BM25(query, title) (bm25s' lucene scores over the
    # product texts), so the teacher is a hybrid of the sentence encoder and exact word match; rows
    # whose query has no encoder vector (distill_queries) then distil BM25 alone. 0 = off.
    distill_bm25: float = 0.0
    # Teacher-mined columns (needs distill_weight > 0): each positive row adds its query's K best
    # catalog products by BM25 over the titles (computed once at train start) to the step's columns,
    # so the distillation sees how the teacher orders the products that share the query's words, not
    # only the batch's positives and the student's own mined negatives. They are not negatives of
    # their own row's softmax contrast (many are unjudged matches), nor hinge negatives. 0 = off (the default).
    distill_bm25_negatives: int = 0
    inbatch_negatives: int = 8  # hardest other-row products per row
    uniform_negatives: int = 64  # random catalog products shared by the batch
    dynamic_negatives: int = 2  # mined per row from the pool
    dynamic_pool: int = 4096  # products encoded (no grad) into the mining pool
    dynamic_refresh: int = 50  # steps between pool refreshes
    warmup_fraction: float = 0.2  # uniform negatives only during this fraction of the steps
    uniform_weight_start: float = 1.0
    uniform_weight_end: float = 0.3
    inbatch_weight_end: float = 1.0
    dynamic_weight_end: float = 1.0

    def __post_init__(self) -> None:
        if len(self.thresholds) != 5:
            raise ValueError("thresholds must list 5 values: [negative, click, favorite, add_to_cart, purchase]")
        pos = self.thresholds[1:]
        if any(b < a for a, b in zip(pos, pos[1:])):
            raise ValueError(f"thresholds must be ordered click <= favorite <= add_to_cart <= purchase, got {pos}")
        if self.thresholds[0] > pos[0]:
            raise ValueError("the negative threshold must not exceed the click threshold")
        if self.history_session_gap_s < 0:
            raise ValueError(f"history_session_gap_s must be >= 0 seconds, got {self.history_session_gap_s}")
        for name in ("epochs", "batch_size", "dim", "term_dim", "hidden", "history_heads", "quality_buckets",
                     "graph_walks_per_node", "graph_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.history_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by history_heads ({self.history_heads})")
        if not 0.0 < self.impression_sample <= 1.0:
            raise ValueError("impression_sample must be in (0, 1]")
        if self.graph_word_weight < 0:
            raise ValueError(f"graph_word_weight must be >= 0, got {self.graph_word_weight}")
        for name in ("query_graph_dropout", "product_graph_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.personal_contrast < 0 or self.personal_temperature <= 0:
            raise ValueError("personal_contrast must be >= 0 and personal_temperature > 0")
        if self.shown_negatives < 0 or self.shown_weight < 0 or self.shown_margin < 0 or self.shown_window_s < 0:
            raise ValueError("shown_negatives, shown_weight, shown_margin and shown_window_s must be >= 0, got "
                             f"{self.shown_negatives}, {self.shown_weight}, {self.shown_margin}, {self.shown_window_s}")
        if self.contrast_weight < 0:
            raise ValueError(f"contrast_weight must be >= 0, got {self.contrast_weight}")
        if self.contrast_temperature <= 0:
            raise ValueError(f"contrast_temperature must be > 0, got {self.contrast_temperature}")
        if self.contrast_type_weights and (len(self.contrast_type_weights) != 4 or min(self.contrast_type_weights) < 0
                                           or max(self.contrast_type_weights) <= 0):
            raise ValueError("contrast_type_weights must be empty or list 4 weights >= 0 (not all 0) for "
                             f"[click, favorite, add_to_cart, purchase], got {self.contrast_type_weights}")
        if self.distill_weight < 0 or self.distill_temperature <= 0 or self.distill_queries < 0:
            raise ValueError("distill_weight must be >= 0, distill_temperature > 0 and distill_queries >= 0, got "
                             f"{self.distill_weight}, {self.distill_temperature}, {self.distill_queries}")
        if self.distill_bm25 < 0:
            raise ValueError(f"distill_bm25 must be >= 0, got {self.distill_bm25}")
        if self.distill_bm25 > 0 and self.distill_weight == 0:
            raise ValueError("distill_bm25 > 0 needs distill_weight > 0 (it is part of the distillation teacher)")
        if self.distill_bm25_negatives < 0:
            raise ValueError(f"distill_bm25_negatives must be >= 0, got {self.distill_bm25_negatives}")
        if self.distill_bm25_negatives > 0 and self.distill_weight == 0:
            raise ValueError("distill_bm25_negatives > 0 needs distill_weight > 0 (they are columns of the distillation)")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant', 'linear' or 'cosine', got {self.lr_schedule!r}")
        if not self.term_lr_scale > 0:
            raise ValueError(f"term_lr_scale must be > 0, got {self.term_lr_scale}")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError("warmup_fraction must be in [0, 1]")

    @property
    def term_vocab_size(self) -> int:
        """Size of the featurizer's single id space (0 = padding)."""
        return 1 + self.word_buckets + self.bigram_buckets + self.trigram_buckets

    def featurizer_kwargs(self) -> dict[str, int]:
        """Keyword arguments of `upper_fast.FeaturizerConfig` for this run."""
        return {
            "word_buckets": self.word_buckets,
            "bigram_buckets": self.bigram_buckets,
            "trigram_buckets": self.trigram_buckets,
            "max_query_terms": self.max_query_terms,
            "max_product_terms": self.max_product_terms,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict; keys that are not fields (e.g. vocab sizes a run adds) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = dict(values)
        # A run directory's config.json (it carries term_vocab_size) from before lexical_skip existed.
        if "term_vocab_size" in values and "lexical_skip" not in values:
            values["lexical_skip"] = False
        if "term_vocab_size" in values and "user_skip" not in values:
            values["user_skip"] = False
        if "term_vocab_size" in values and "term_type_scale" not in values:
            values["term_type_scale"] = False
        if "term_vocab_size" in values and "term_weights" not in values:
            values["term_weights"] = False
        if "term_vocab_size" in values and "shown_negatives" not in values:
            values["shown_negatives"] = 0  # trained before shown negatives existed (a resume keeps its loss)
        if "term_vocab_size" in values and "graph_word_weight" not in values:
            values["graph_word_weight"] = 0.0  # its graph.npz was built without word nodes
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
