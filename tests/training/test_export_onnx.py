import numpy as np
import onnx
import pytest

from upper_fast_train.export import ONNX_INPUTS, check_onnx_parity, normalise_quality, parity_inputs
from serve_tiny import COUNTRIES, G, L, M, N, VOCAB, tiny_onnx


def test_onnx_parity_on_1000_inputs(tmp_path):
    tower, path = tiny_onnx(tmp_path / "q.onnx")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(ONNX_INPUTS)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inputs = parity_inputs(1000, graph_dim=G, hist_items=N, hist_queries=M, query_terms=L, vocab_size=VOCAB,
                           n_countries=len(COUNTRIES), seed=1)
    kind = np.arange(1000) % 4
    assert (inputs["hist_item_type"][kind == 0] == 0).all() and (inputs["user_country"][kind == 0] == 0).all()
    assert (inputs["query_graph_mask"][kind == 1] == 0).all()
    assert check_onnx_parity(tower, path, inputs) < 1e-4


def test_normalise_quality_is_rank_in_unit_interval():
    x = np.array([5.0, 1.0, np.nan, 3.0, 3.0, 100.0])
    out, info = normalise_quality({"rating": x})
    assert out.dtype == np.float32 and out.shape == (6, 1)
    assert out[2, 0] == 0.0 and out[3, 0] == out[4, 0]
    assert (np.argsort(out[[0, 1, 3, 5], 0]) == np.argsort(x[[0, 1, 3, 5]])).all()
    assert 0.0 <= out.min() and out.max() <= 1.0 and info["names"] == ["rating"]
    with pytest.raises(ValueError):
        normalise_quality({})
