"""The lean serving form of the query-user tower: same function as the training tower, fewer ONNX nodes."""

import numpy as np
import onnx
import pytest
import torch

from upper_fast_train.config import TrainConfig
from upper_fast_train.export import (ONNX_INPUTS, QUERY_PART_INPUTS, USER_INPUTS, check_onnx_parity, check_split_parity,
                                     export_query_tower, export_split_towers, parity_inputs)
from upper_fast_train.serving_tower import LeanQueryTower
from upper_fast_train.towers import QueryUserTower, TermBag

VOCAB, N, M, L, COUNTRIES = 700, 6, 3, 16, 4


def _tower(personalized: bool, lexical: bool, seed: int = 0, user_skip: bool = True,
           type_bounds: tuple[int, int] | None = None, **flat: object) -> QueryUserTower:
    torch.manual_seed(seed)
    cfg = TrainConfig.from_flat(graph_dim=12, term_dim=16, hidden=32, history_heads=4, country_dim=8, dim=24, dropout=0.0,
                      personalized=personalized, lexical_skip=lexical, user_skip=user_skip, **flat)
    terms = TermBag(VOCAB, cfg.model.term_dim, type_bounds)
    lex = torch.nn.Linear(cfg.model.term_dim, cfg.model.dim, bias=False) if lexical else None
    tower = QueryUserTower(cfg, terms, COUNTRIES + 1, lex)
    with torch.no_grad():  # every parameter non-trivial, so each folded constant is exercised
        for p in tower.parameters():
            p.add_(0.3 * torch.randn_like(p))
        terms.embedding.weight[0] = 5.0  # the training bag masks the padding row; the lean one must too
    return tower.eval()


def _inputs(n: int = 400, seed: int = 1) -> dict[str, np.ndarray]:
    return parity_inputs(n, graph_dim=12, hist_items=N, hist_queries=M, query_terms=L, vocab_size=VOCAB,
                         n_countries=COUNTRIES, seed=seed)


@pytest.mark.parametrize("personalized,lexical,user_skip",
                         [(True, True, True), (True, False, True), (False, True, True), (True, True, False), (False, True, False)])
def test_lean_tower_matches_training_tower(personalized, lexical, user_skip):
    tower = _tower(personalized, lexical, user_skip=user_skip)
    assert (tower.user_skip is not None) == user_skip
    lean = LeanQueryTower.from_tower(tower)
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    with torch.no_grad():
        ref, got = tower(**x), lean(**x)
    assert torch.isfinite(got).all()
    assert (ref - got).abs().max().item() < 1e-5
    # A row whose history is all padding (signed out) and one with a full history both covered.
    assert (x["hist_item_type"].sum(1) == 0).any() and (x["hist_item_type"] > 0).all(1).any()


def test_both_towers_split_the_fusion_input_at_the_query_parts():
    # The lean tower's query/user split of the first fusion layer is the training tower's query_width,
    # which must be the width of the shared query_parts (a part added there moves both).
    from upper_fast_train.towers import query_parts

    tower = _tower(True, True)
    x = {k: torch.from_numpy(v) for k, v in _inputs(5).items()}
    with torch.no_grad():
        parts = query_parts(tower.terms(x["query_terms"]), x["query_graph"], x["query_graph_mask"])
    assert sum(p.shape[-1] for p in parts) == tower.query_width == LeanQueryTower.from_tower(tower).query_rows
    assert tower.fuse[0].in_features > tower.query_width


def test_lean_tower_folds_term_type_scales():
    # TrainConfig.experimental.term_type_scale: the three learned type scales are folded into the served table.
    tower = _tower(True, True, type_bounds=(300, 500))
    scales = tower.terms.type_log_scale.detach()
    assert scales.abs().min() > 0 and len(set(scales.tolist())) == 3  # perturbed: every type differs
    lean = LeanQueryTower.from_tower(tower)
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    assert ((x["query_terms"] > 300) & (x["query_terms"] <= 500)).any() and (x["query_terms"] > 500).any()
    with torch.no_grad():
        assert (tower(**x) - lean(**x)).abs().max().item() < 1e-5
        plain = _tower(True, True)  # no type scales: a different function
        assert (plain(**x) - tower(**x)).abs().max().item() > 1e-3


def _tower_with_terms(**bag_options: bool) -> tuple[QueryUserTower, TermBag]:
    """A lexical-skip tower over a TermBag built with `bag_options`, every parameter perturbed."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_flat(graph_dim=12, term_dim=16, hidden=32, history_heads=4, country_dim=8, dim=24, dropout=0.0)
    terms = TermBag(VOCAB, cfg.model.term_dim, **bag_options)
    tower = QueryUserTower(cfg, terms, COUNTRIES + 1, torch.nn.Linear(cfg.model.term_dim, cfg.model.dim, bias=False))
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return tower, terms


def test_lean_tower_folds_idf_row_scales():
    # TrainConfig.model.term_idf_scale: the fixed per-row idf weights are folded into the served table.
    tower, terms = _tower_with_terms(row_scale=True)
    docs = np.random.default_rng(3).integers(0, VOCAB // 2, (50, 8))  # ids >= VOCAB / 2 in no document
    terms.set_idf(docs)
    scale = terms.row_scale
    used = torch.from_numpy(np.unique(docs))
    assert scale.max() == 1.0 and scale[VOCAB // 2:].eq(1.0).all() and scale[used].lt(1.0).all() and len(used) > 100
    tower.eval()
    lean = LeanQueryTower.from_tower(tower)
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    with torch.no_grad():
        assert (tower(**x) - lean(**x)).abs().max().item() < 1e-5
        terms.row_scale.fill_(1.0)
        assert (tower(**x) - lean(**x)).abs().max().item() > 1e-3  # the scales did change the function


def test_lean_tower_folds_learned_term_weights(tmp_path):
    # TrainConfig.experimental.term_weights: the per-id pooling weights ride in the served table's count column,
    # including the smallest weight (exp(-4)): a one-term history query must not be taken for padding.
    tower, terms = _tower_with_terms(weighted=True)
    with torch.no_grad():
        terms.weight_logit.weight.normal_(0.0, 3.0)  # weights across the whole clamped range
        terms.weight_logit.weight[7] = -100.0  # below the bound: the weight is exp(-4)
        terms.embedding.weight[0] = 5.0
    tower.eval()
    lean = LeanQueryTower.from_tower(tower)
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    x["hist_query_terms"][:5] = 0
    x["hist_query_terms"][:5, 0, 0] = 7  # history queries of one lightest-weight term
    with torch.no_grad():
        assert (tower(**x) - lean(**x)).abs().max().item() < 1e-5
    # and through onnxruntime: the whole tower and the user / query split
    inputs = {k: v.numpy() for k, v in x.items()}
    assert check_onnx_parity(tower, export_query_tower(tower, tmp_path / "q.onnx", inputs), inputs) < 1e-4
    user_path, query_path = export_split_towers(tower, tmp_path, inputs)
    assert check_split_parity(tower, user_path, query_path, inputs) < 1e-4
    with torch.no_grad():
        terms.weight_logit.weight.zero_()
        assert (tower(**x) - lean(**x)).abs().max().item() > 1e-3  # the weights did change the function


def test_lean_tower_with_gelu_history_layer():
    # The feed-forward bias rides on a constant hidden unit scaled by 1 / act(1): check the GELU case.
    tower = _tower(True, True)
    tower.history.activation = torch.nn.functional.gelu
    tower.history.activation_relu_or_gelu = 2
    lean = LeanQueryTower.from_tower(tower)
    assert lean.act_name == "gelu"
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    with torch.no_grad():
        assert (tower(**x) - lean(**x)).abs().max().item() < 1e-5


def test_lean_export_is_smaller_and_matches(tmp_path):
    tower = _tower(True, True)
    example = _inputs(4)
    lean_path = export_query_tower(tower, tmp_path / "lean.onnx", example)
    plain_path = export_query_tower(tower, tmp_path / "plain.onnx", example, lean=False)
    lean_nodes = len(onnx.load(str(lean_path)).graph.node)
    plain_nodes = len(onnx.load(str(plain_path)).graph.node)
    assert lean_nodes < 0.5 * plain_nodes, (lean_nodes, plain_nodes)
    model = onnx.load(str(lean_path))
    assert [i.name for i in model.graph.input] == list(ONNX_INPUTS)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    inputs = _inputs(1000, seed=3)
    assert check_onnx_parity(tower, lean_path, inputs) < 1e-4
    assert check_onnx_parity(tower, plain_path, inputs) < 1e-4


def _optimised_nodes(path, tmp_path) -> list[str]:
    """Op types of the graph onnxruntime runs (ORT_ENABLE_ALL, as the Retriever loads it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / f"opt-{path.name}")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]


def test_lean_tower_node_budget(tmp_path):
    # Batch-1 latency is per node (docs/serving.md): a change that adds nodes to the served graphs
    # should be a decision, not an accident. Counts after onnxruntime's own optimisation.
    tower = _tower(True, True)
    example = _inputs(4)
    whole = _optimised_nodes(export_query_tower(tower, tmp_path / "whole.onnx", example), tmp_path)
    user_path, query_path = export_split_towers(tower, tmp_path, example)
    user, query = _optimised_nodes(user_path, tmp_path), _optimised_nodes(query_path, tmp_path)
    assert len(whole) <= 52, (len(whole), whole)
    assert len(query) <= 16, (len(query), query)
    assert len(user) <= 40, (len(user), user)
    assert whole.count("LpNormalization") == 1 and "ReduceL2" not in whole


def test_l2_normalize_node_matches_torch(tmp_path):
    # The output normalisation is one LpNormalization node; a zero row must stay 0 (no NaN), as the
    # torch clamp gives.
    import onnxruntime as ort

    from upper_fast_train.serving_tower import _L2Normalize

    class Norm(torch.nn.Module):
        def forward(self, x):
            return _L2Normalize.apply(x)

    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1e-3, -2e-3, 5.0]])
    torch.onnx.export(Norm(), (x,), str(tmp_path / "n.onnx"), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)
    assert [n.op_type for n in onnx.load(str(tmp_path / "n.onnx")).graph.node] == ["LpNormalization"]
    got = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    ref = Norm()(x).numpy()
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 1e-6
    assert (got[1] == 0).all()


def test_lean_tower_rejects_other_modules():
    with pytest.raises(TypeError, match="QueryUserTower"):
        LeanQueryTower.from_tower(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("personalized,lexical", [(True, True), (True, False), (False, True)])
def test_split_tower_is_the_same_function(personalized, lexical, tmp_path):
    """query_from_user(q, user_vector(u)) is the tower, in torch and as the two exported ONNX graphs;
    the user vector depends on the user inputs only (the ablation's is one constant)."""
    tower = _tower(personalized, lexical)
    lean = LeanQueryTower.from_tower(tower)
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    with torch.no_grad():
        ref = tower(**x)
        users = lean.user_vector(*(x[k] for k in USER_INPUTS))
        got = lean.query_from_user(x["query_terms"], x["query_graph"], x["query_graph_mask"], users)
        other = lean.user_vector(*(torch.roll(x[k], 1, 0) for k in USER_INPUTS))
    assert users.shape == (400, lean.user_dim)
    assert (ref - got).abs().max().item() < 1e-5
    if personalized:
        assert (users - torch.roll(other, -1, 0)).abs().max().item() < 1e-6  # a function of the user inputs
        assert (users[1:] - users[:-1]).abs().max().item() > 1e-3
    else:
        assert (users - users[0]).abs().max().item() < 1e-6
    example = _inputs(4)
    user_path, query_path = export_split_towers(tower, tmp_path, example)
    assert [i.name for i in onnx.load(str(user_path)).graph.input] == list(USER_INPUTS)
    assert [i.name for i in onnx.load(str(query_path)).graph.input] == list(QUERY_PART_INPUTS)
    assert check_split_parity(tower, user_path, query_path, _inputs(1000, seed=3)) < 1e-4
    with pytest.raises(TypeError, match="QueryUserTower"):
        export_split_towers(torch.nn.Linear(2, 2), tmp_path, example)


def test_lean_tower_matches_a_tower_whose_user_reaches_it_through_the_skip_only():
    """experimental.user_fusion false (the fusion's user columns held at zero): the lean tower, which
    reads those columns like any other, computes the same vectors."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_flat(graph_dim=12, term_dim=16, hidden=32, history_heads=4, country_dim=8, dim=24, dropout=0.0,
                                user_fusion=False)
    tower = QueryUserTower(cfg, TermBag(VOCAB, cfg.model.term_dim), COUNTRIES + 1,
                           torch.nn.Linear(cfg.model.term_dim, cfg.model.dim, bias=False))
    assert bool((tower.fuse[0].weight[:, tower.query_width:] == 0).all())
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name != "fuse.0.weight":
                p.add_(0.3 * torch.randn_like(p))
    tower.eval()
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    with torch.no_grad():
        ref, got = tower(**x), LeanQueryTower.from_tower(tower)(**x)
    assert (ref - got).abs().max().item() < 1e-5


def test_known_query_personalisation_blanks_the_user_of_queries_without_a_graph_node(tmp_path):
    """experimental.personalize_known_queries: in eval mode a row whose query_graph_mask is 0 gets the
    blanked user, a row with 1 its own; the lean tower, its split user/query form and the ONNX
    exports compute the same."""
    tower = _tower(True, True, personalize_known_queries=True)
    plain = _tower(True, True)  # same seed: the same weights, no rule
    blank = _tower(False, True)
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    known = x["query_graph_mask"] > 0
    assert bool(known.any()) and bool((~known).any())
    with torch.no_grad():
        got, want_known, want_new = tower(**x), plain(**x), blank(**x)
    torch.testing.assert_close(got[known], want_known[known])
    torch.testing.assert_close(got[~known], want_new[~known])
    lean = LeanQueryTower.from_tower(tower)
    with torch.no_grad():
        assert (lean(**x) - got).abs().max().item() < 1e-5
        user = lean.user_vector(x["hist_item_graph"], x["hist_item_type"], x["hist_query_terms"], x["user_country"])
        split = lean.query_from_user(x["query_terms"], x["query_graph"], x["query_graph_mask"], user)
    assert (split - got).abs().max().item() < 1e-5
    inputs = _inputs(300, seed=3)
    assert check_onnx_parity(tower, export_query_tower(tower, tmp_path / "q.onnx", _inputs(4)), inputs) < 1e-4
    assert check_split_parity(tower, *export_split_towers(tower, tmp_path, _inputs(4)), inputs) < 1e-4
    tower.train()  # training is unchanged: every row keeps its user
    with torch.no_grad():
        torch.testing.assert_close(tower(**x), plain.train()(**x))


@pytest.mark.parametrize("lexical,user_skip,flat", [(True, True, {}), (False, True, {}), (True, False, {}),
                                                    (True, True, {"user_fusion": False, "user_after_norm": True})])
def test_forward_blanked_equals_the_tower_with_blanked_user_inputs(lexical, user_skip, flat):
    """`QueryUserTower.forward_blanked` (one history-encoder pass for all rows) gives what the tower
    gives with its user inputs blanked, in eval and in training mode, and its gradient reaches the
    shared term table and the history encoder."""
    tower = _tower(True, lexical, user_skip=user_skip, **flat)
    blank = _tower(False, lexical, user_skip=user_skip, **flat)  # same seed: the same weights, user blanked
    x = {k: torch.from_numpy(v) for k, v in _inputs().items()}
    q = (x["query_terms"], x["query_graph"], x["query_graph_mask"])
    for mode in (False, True):
        tower.train(mode), blank.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(tower.forward_blanked(*q), blank(**x), atol=1e-5, rtol=1e-5)
            assert (tower.forward_blanked(*q) - tower(**x)).abs().max().item() > 1e-3  # the user does change it
    tower.forward_blanked(*q).sum().backward()
    assert tower.terms.embedding.weight.grad is not None and tower.summary.grad is not None


def test_forward_blanked_reuses_the_training_forwards_query_parts():
    """With objective.distill_rows "blanked" a training forward keeps its query parts and the next
    forward_blanked on the same tensors uses them once: the term table is read once for the query
    (and its history queries, in one bag call), and the result equals a fresh computation."""
    tower = _tower(True, True, distill_rows="blanked").train()
    x = {k: torch.from_numpy(v) for k, v in _inputs(50).items()}
    q = (x["query_terms"], x["query_graph"], x["query_graph_mask"])
    with torch.no_grad():
        fresh = tower.forward_blanked(*q)
    calls = []
    hook = tower.terms.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    tower(**x)
    shared = tower.forward_blanked(*q)
    assert calls == [50 + 50 * M]  # one bag call for the queries and their history queries, none for the blanked pass
    tower.forward_blanked(*q)  # used once: a second call computes its own parts
    assert calls == [50 + 50 * M, 50]
    hook.remove()
    torch.testing.assert_close(shared.detach(), fresh, atol=1e-6, rtol=1e-6)
    assert not _tower(True, True).train().keeps_query_parts  # other objectives keep nothing


def test_the_history_attentions_key_bias_changes_nothing_and_is_held():
    """q . b_k is the same for every key of a query, so the softmax ignores the key bias: the tower
    holds it at zero (its gradient is masked) and no output depends on it."""
    tower = _tower(True, True).train()
    x = {k: torch.from_numpy(v) for k, v in _inputs(60).items()}
    h = tower.summary.shape[-1]
    bias = tower.history.self_attn.in_proj_bias
    with torch.no_grad():
        before = tower(**x)
        bias[h:2 * h] += 3.0
        torch.testing.assert_close(tower(**x), before, atol=1e-5, rtol=1e-5)
        bias[h:2 * h] = 0.0
    tower(**x).sum().backward()
    assert bool((bias.grad[h:2 * h] == 0).all()) and bool((bias.grad[:h] != 0).any())
