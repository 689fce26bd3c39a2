"""Featurizer: hash stability against the pure-Python reference, id ranges, truncation, errors."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import featurizer_reference as ref
import upper_fast
from upper_fast import Featurizer, FeaturizerConfig, unicode_version

SMALL = FeaturizerConfig(word_buckets=97, bigram_buckets=89, trigram_buckets=83, max_query_terms=8)
TEXTS = [
    "angle bracket",
    "Convection OTR",
    "1/2 in. x 10 ft. PVC pipe",
    "",
    "   ",
    "Ölfilter für Käfer",
    "ﬁne ＷＩＤＥ ①②",
    "straße İstanbul ΣΊΣΥΦΟΣ",
    "soft\u00adhyphen zero\u200bwidth",
    "日本語の検索 クエリ",
    "emoji 🎉 party!!",
    "x",
]


def test_hash_matches_hard_coded_reference_ids() -> None:
    # Expected ids were computed by tests/featurizer_reference.py (the oracle), default config.
    f = Featurizer()
    assert f.term_ids("angle bracket").tolist() == ref.term_ids("angle bracket", 262144, 262144, 131072)
    assert f.term_ids("angle bracket").tolist() == [
        164545, 47571, 405162, 593697, 626549, 578906, 632723, 637509,
        634453, 642205, 650278, 616651, 628917, 601560, 589260,
    ]
    assert f.term_ids("Käfer").tolist() == [50570, 597284, 633466, 625066, 592986, 589567]
    assert f.term_ids("ΣΊΣΥΦΟΣ 日本").tolist() == [
        234694, 99966, 488050, 617479, 610622, 615073, 610093, 632086, 649102, 622262, 551530, 622814,
    ]


@pytest.mark.parametrize("text", TEXTS)
def test_term_ids_match_reference(text: str) -> None:
    f = Featurizer(SMALL)
    got = f.term_ids(text)
    assert got.dtype == np.int64
    assert got.tolist() == ref.term_ids(text, 97, 89, 83)
    assert f.normalize(text) == ref.normalize(text)


def test_random_texts_match_reference() -> None:
    rng = random.Random(7)
    alphabet = "abcxyzÄäßİıΣσς日本ー  ,.-/#_\u0301\u0308\u00ad\u200b①ﬁＡ"
    f = Featurizer(SMALL)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(500)]
    batch = f.featurize(texts, 40)
    for i, text in enumerate(texts):
        expected = ref.term_ids(text, 97, 89, 83)[:40]
        assert batch[i].tolist() == expected + [0] * (40 - len(expected)), text


def test_stem_plurals_match_reference() -> None:
    rng = random.Random(11)
    words = ["doors", "door", "batteries", "shoes", "class", "cactus", "gas", "ties", "aies", "séries", "2x4s",
             "ß", "boxes", "ss", "ıes", "日本s"]
    config = FeaturizerConfig(word_buckets=97, bigram_buckets=89, trigram_buckets=83, stem_plurals=True)
    f, plain = Featurizer(config), Featurizer(SMALL)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(300)]
    batch = f.featurize(texts, 60)
    for i, text in enumerate(texts):
        expected = ref.term_ids(text, 97, 89, 83, stem_plurals=True)[:60]
        assert batch[i].tolist() == expected + [0] * (60 - len(expected)), text
    assert f.term_ids("oak doors").tolist() == plain.term_ids("oak door").tolist()
    assert plain.term_ids("oak doors").tolist() != plain.term_ids("oak door").tolist()  # off by default
    assert f.query_key("Oak Doors") == "oak doors"  # query keys (graph nodes) are not stemmed


def test_stem_plurals_in_the_description() -> None:
    data = json.loads(json.dumps(FeaturizerConfig(stem_plurals=True).to_dict()))
    assert data["stem_plurals"] is True and FeaturizerConfig.from_dict(data).stem_plurals
    older = {k: v for k, v in FeaturizerConfig().to_dict().items() if k != "stem_plurals"}
    assert FeaturizerConfig.from_dict(older).stem_plurals is False  # descriptions from before it read as off
    with pytest.raises(TypeError, match="stem_plurals"):
        FeaturizerConfig(stem_plurals="yes")


def test_id_ranges_and_order() -> None:
    cfg = SMALL
    f = Featurizer(cfg)
    ids = f.term_ids("red oak floor planks")
    words, bigrams, trigrams = ids[:4], ids[4:7], ids[7:]
    assert len(trigrams) == len("redoakfloorplanks")
    assert np.all((words >= cfg.word_range[0]) & (words < cfg.word_range[1]))
    assert np.all((bigrams >= cfg.bigram_range[0]) & (bigrams < cfg.bigram_range[1]))
    assert np.all((trigrams >= cfg.trigram_range[0]) & (trigrams < cfg.trigram_range[1]))
    assert cfg.trigram_range[1] == cfg.vocab_size == 1 + 97 + 89 + 83
    many = f.featurize(TEXTS * 20, 64)
    assert many.min() >= 0 and many.max() < cfg.vocab_size


def test_featurize_truncates_from_the_end_and_pads() -> None:
    f = Featurizer(SMALL)
    full = f.term_ids("red oak floor planks")
    for max_terms in (1, 3, 5, len(full), len(full) + 7):
        out = f.featurize(["red oak floor planks", ""], max_terms)
        assert out.shape == (2, max_terms) and out.dtype == np.int64
        keep = min(max_terms, len(full))
        assert out[0, :keep].tolist() == full[:keep].tolist()
        assert np.all(out[0, keep:] == 0) and np.all(out[1] == 0)
    assert f.featurize(["a b"]).shape == (1, SMALL.max_query_terms)
    assert f.featurize_products(["a b"]).shape == (1, SMALL.max_product_terms)
    assert f.featurize([], 5).shape == (0, 5)


def test_featurize_threads_agree() -> None:
    f = Featurizer()
    texts = [f"query {i} item{i % 17} größe" for i in range(5000)]
    one = f.featurize(texts, 16, num_threads=1)
    assert np.array_equal(one, f.featurize(texts, 16, num_threads=2))
    assert np.array_equal(one, f.featurize(tuple(texts), 16, num_threads=0))
    assert np.array_equal(one[:3], f.featurize([t.encode() for t in texts[:3]], 16))


def test_ids_identical_across_processes() -> None:
    script = (
        "import json; from upper_fast import Featurizer;"
        "f = Featurizer(); print(json.dumps(f.featurize(%r, 32).tolist()))" % (TEXTS,)
    )
    # The directory the tested upper_fast was imported from (in-place build or installed wheel).
    package_root = Path(upper_fast.__file__).resolve().parents[1]
    outputs = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(package_root))
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == Featurizer().featurize(TEXTS, 32).tolist()


def test_normalize_and_query_key() -> None:
    f = Featurizer()
    assert f.normalize("  Hello,   WORLD!! ") == "hello world"
    assert f.normalize("ﬁne ＷＩＤＥ") == "fine wide"
    assert f.normalize("Straße") == "strasse"
    assert f.normalize("soft\u00adhyphen") == "softhyphen"
    assert f.query_key("Angle-Bracket") == "angle bracket"
    assert f.query_keys(["A.B", "c"]) == ["a b", "c"]
    assert f.normalize_many(TEXTS) == [ref.normalize(t) for t in TEXTS]
    assert f.normalize(b"caf\xc3\xa9") == "café"


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"ab\xff", 2), (b"\x80", 0), (b"ok \xe2\x82", 3), (b"\xc0\xaf", 0), (b"x\xed\xa0\x80", 1),
     (b"\xf4\x90\x80\x80", 0), (b"\xe0\x80\x80", 0)],
)
def test_invalid_utf8_names_the_byte_offset(data: bytes, offset: int) -> None:
    f = Featurizer()
    with pytest.raises(ValueError, match=f"byte offset {offset}"):
        f.normalize(data)
    with pytest.raises(ValueError, match=rf"texts\[1\]: invalid UTF-8 at byte offset {offset}"):
        f.featurize(["fine", data], 4)


def test_bad_arguments() -> None:
    f = Featurizer()
    with pytest.raises(TypeError, match="wrap it in a list"):
        f.featurize("single string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        f.featurize(["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence"):
        f.featurize(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_terms"):
        f.featurize(["a"], 0)
    with pytest.raises(TypeError, match="max_terms"):
        f.featurize(["a"], 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="surrogate"):
        f.normalize("\ud800")
    with pytest.raises(TypeError, match="str"):
        f.term_ids(None)  # type: ignore[arg-type]
    for bad in (0, -1, (1 << 30) + 1):
        with pytest.raises(ValueError, match="word_buckets"):
            FeaturizerConfig(word_buckets=bad)
    with pytest.raises(TypeError, match="trigram_buckets"):
        FeaturizerConfig(trigram_buckets=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_query_terms"):
        FeaturizerConfig(max_query_terms=0)
    with pytest.raises(TypeError, match="FeaturizerConfig"):
        Featurizer({"word_buckets": 3})  # type: ignore[arg-type]


def test_dict_round_trip() -> None:
    f = Featurizer(SMALL)
    data = json.loads(json.dumps(f.to_dict()))
    assert data["unicode_version"] == unicode_version() and data["hash"] == "fnv1a64+fmix64"
    g = Featurizer.from_dict(data)
    assert g.config == SMALL
    assert np.array_equal(g.featurize(TEXTS, 8), f.featurize(TEXTS, 8))
    with pytest.raises(ValueError, match="Unicode"):
        Featurizer.from_dict({**data, "unicode_version": "1.0.0"})
    with pytest.raises(ValueError, match="hash"):
        Featurizer.from_dict({**data, "hash": "md5"})
    with pytest.raises(ValueError, match="bigram_buckets"):
        Featurizer.from_dict({k: v for k, v in data.items() if k != "bigram_buckets"})


def test_pyarrow_columns_match_lists() -> None:
    pa = pytest.importorskip("pyarrow")
    f = Featurizer(SMALL)
    texts = TEXTS * 3
    expected = f.featurize(texts, 12)
    for column in (
        pa.array(texts),
        pa.array(texts, pa.large_string()),
        pa.chunked_array([pa.array(texts[:5]), pa.array(texts[5:])]),
        pa.chunked_array([pa.array(texts[:7], pa.large_string()), pa.array(texts[7:], pa.large_string())]),
        pa.array(["pad"] + texts)[1:],  # sliced: nonzero offset
    ):
        assert np.array_equal(f.featurize(column, 12), expected)
    with_null = f.featurize(pa.array(["a b", None, "c"]), 4)
    assert np.array_equal(with_null, f.featurize(["a b", "", "c"], 4))
    assert f.featurize(pa.array([], pa.string()), 4).shape == (0, 4)
    with pytest.raises(TypeError, match="strings"):
        f.featurize(pa.array([1, 2]), 4)
    with pytest.raises(TypeError, match="one column"):
        f.featurize(pa.table({"t": ["a"]}), 4)
    assert f.featurize(pa.chunked_array([], pa.string()), 4).shape == (0, 4)
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, 2], np.int32)), pa.py_buffer(b"\xffa")])
    with pytest.raises(ValueError, match="byte offset 0"):
        f.featurize(bad, 4)
