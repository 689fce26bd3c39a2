"""Item-interaction recommendations: "because you viewed this, you may add that to cart".

One vector per (product, interaction type) pair, learned from shopper sessions by
`upper_fast_train.item_interactions` (skip-gram with typed negatives and title subwords). A question
"having done `from_` on A, what will the shopper `to` next?" is a nearest-neighbour look-up from A's
`from_` vector among the `to` vectors: one `upper_fast.Index` per interaction type, inner product on
L2-normalised vectors. Torch-free.

Bundle layout (format "upper_fast.recommendations", written by `write_recommendations_bundle`):

    manifest.json          format + version, dims, index settings, sha256 and size of every file
    featurizer.json        FeaturizerConfig of the title subwords
    product_ids.txt        product ids, one per line; row i of every per-product array
    titles.txt             the product titles (one per line, "" when unknown): for display and cold vectors
    subwords.npy           (n_buckets, dim) float32 title subword table (row 0 = padding, zeros)
    <type>.rows.npy        (n_type,) int64 product rows that have a `<type>` vector
    <type>.vectors.npy     (n_type, dim) float32 L2-normalised `<type>` vectors
    <type>.upf             upper_fast.Index over <type>.vectors.npy, ids = product rows

for <type> in TOKEN_TYPES. A product the bundle has no `from_` vector for gets the normalised mean of
its title's subword rows (from `titles.txt`, or the title the caller passes).

A recommendations bundle stands alone or lives in the `recommendations/` folder of a search bundle
(`upper-fast export-interactions RUN SEARCH_BUNDLE`); `Recommender.load` takes either path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast._core import FormatError, __version__
from upper_fast.bundle import commit_staged, sha256_file, staging_dir
from upper_fast.featurizer import Featurizer, FeaturizerConfig, StringIdMap
from upper_fast.index import Index
from upper_fast.interactions import ENGAGEMENTS, INTERACTION_CODES

__all__ = ["RECOMMENDATIONS_DIR", "RECOMMENDATIONS_FORMAT", "TOKEN_TYPES", "Recommendation", "Recommendations",
           "Recommender", "recommendations_dir", "token_type", "write_recommendations_bundle"]

RECOMMENDATIONS_FORMAT = "upper_fast.recommendations"
# Bumped on any incompatible layout change; readers accept exactly the versions they know.
RECOMMENDATIONS_FORMAT_VERSION = 1
#: Interaction types that get their own vector, weakest first: impressions and clicks are both "view".
TOKEN_TYPES: tuple[str, ...] = ("view", *ENGAGEMENTS[1:])
# The published HNSW settings of the item-interaction indexes.
DEFAULT_M = 64
DEFAULT_EF_CONSTRUCTION = 128
DEFAULT_EF_SEARCH = 256
# for_user: how many of the most recent actions of each kind are asked for neighbours (published: 4 and 4).
DEFAULT_LAST_VIEWS = 4
DEFAULT_LAST_CARTS = 4
_VERBS = {"view": "viewed", "favorite": "favorited", "add_to_cart": "added to cart", "purchase": "purchased"}
_MANIFEST = "manifest.json"
_FIXED_FILES = ("featurizer.json", "product_ids.txt", "titles.txt", "subwords.npy")
#: Where a search bundle keeps its recommendations bundle.
RECOMMENDATIONS_DIR = "recommendations"
_SEARCH_FORMAT = "upper_fast.bundle"


def recommendations_dir(bundle_dir: str | os.PathLike[str]) -> Path:
    """The recommendations bundle of `bundle_dir`: its `recommendations/` folder when `bundle_dir` is a
    search bundle (manifest format "upper_fast.bundle"), else `bundle_dir` itself."""
    root = Path(bundle_dir)
    try:
        manifest = json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return root
    return root / RECOMMENDATIONS_DIR if isinstance(manifest, dict) and manifest.get("format") == _SEARCH_FORMAT else root


def token_type(name: str) -> int:
    """The token type index (0..3, position in TOKEN_TYPES) of an interaction name.

    "impression" and "click" are views. Raises ValueError listing the valid names."""
    if name in TOKEN_TYPES:
        return TOKEN_TYPES.index(name)
    if name in INTERACTION_CODES:
        return max(INTERACTION_CODES[name], 1) - 1
    raise ValueError(f"unknown interaction {name!r}: expected one of {list(TOKEN_TYPES)} "
                     f"(or {list(INTERACTION_CODES)[:2]}, which count as 'view')")


def _type_files() -> tuple[str, ...]:
    return tuple(f"{t}.{suffix}" for t in TOKEN_TYPES for suffix in ("rows.npy", "vectors.npy", "upf"))


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One candidate: the product, its similarity and why it was suggested."""

    product_id: str
    score: float
    reason: str
    source_product_id: str
    source_interaction: str
    title: str | None = None


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Hits best first; `note` says why there are none (or fewer) when that has a cause."""

    hits: list[Recommendation]
    note: str | None = None

    def __iter__(self) -> Iterator[Recommendation]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    @property
    def product_ids(self) -> list[str]:
        return [h.product_id for h in self.hits]


def _titles_as_lines(titles: Sequence[str | None]) -> str:
    return "".join(" ".join((t or "").split()) + "\n" for t in titles)


def write_recommendations_bundle(bundle_dir: str | os.PathLike[str], *, product_ids: Sequence[str],
                                 titles: Sequence[str | None], featurizer_config: dict[str, Any],
                                 subwords: np.ndarray, rows: dict[str, np.ndarray], vectors: dict[str, np.ndarray],
                                 model_version: str, M: int = DEFAULT_M,  # noqa: N803 - hnswlib's name
                                 ef_construction: int = DEFAULT_EF_CONSTRUCTION, ef_search: int = DEFAULT_EF_SEARCH,
                                 seed: int = 0, extra: dict[str, Any] | None = None,
                                 overwrite: bool = False) -> dict[str, Any]:
    """Write a recommendations bundle atomically (temp dir beside `bundle_dir`, one rename); returns the manifest.

    product_ids (n,), titles (n,) (None/"" when unknown); subwords (n_buckets, dim) float32 with
    n_buckets = FeaturizerConfig(**featurizer_config).vocab_size; rows[t] (n_t,) int64 product rows
    and vectors[t] (n_t, dim) float32 for every t in TOKEN_TYPES (normalised here). Nothing is left
    behind on error.
    """
    n = len(product_ids)
    if len(titles) != n:
        raise ValueError(f"titles has {len(titles)} entries for {n} product ids")
    if any(("\n" in p or "\r" in p) for p in product_ids):
        raise ValueError("product_ids must not contain line breaks (one id per line in the bundle)")
    fz = FeaturizerConfig.from_dict(dict(featurizer_config))
    if not isinstance(subwords, np.ndarray) or subwords.dtype != np.float32 or subwords.ndim != 2:
        raise TypeError("subwords must be a 2-d float32 numpy array")
    if subwords.shape[0] != fz.vocab_size:
        raise ValueError(f"subwords has {subwords.shape[0]} rows, the featurizer has {fz.vocab_size} buckets")
    dim = subwords.shape[1]
    missing = [t for t in TOKEN_TYPES if t not in rows or t not in vectors]
    if missing:
        raise ValueError(f"rows and vectors lack the types {missing} (one entry per type in {list(TOKEN_TYPES)})")
    staged = staging_dir(bundle_dir)
    try:
        (staged / "featurizer.json").write_text(json.dumps(fz.to_dict(), indent=2, sort_keys=True) + "\n")
        (staged / "product_ids.txt").write_text("".join(p + "\n" for p in product_ids), encoding="utf-8")
        (staged / "titles.txt").write_text(_titles_as_lines(titles), encoding="utf-8")
        np.save(staged / "subwords.npy", np.ascontiguousarray(subwords))
        counts = {}
        for t in TOKEN_TYPES:
            r = np.ascontiguousarray(rows[t], dtype=np.int64)
            v = np.asarray(vectors[t], dtype=np.float32)
            if v.ndim != 2 or v.shape != (len(r), dim):
                raise ValueError(f"vectors[{t!r}] must be ({len(r)}, {dim}), got {v.shape}")
            if len(r) and (r.min() < 0 or r.max() >= n or len(np.unique(r)) != len(r)):
                raise ValueError(f"rows[{t!r}] must be distinct product rows in [0, {n})")
            v = _normalised(v)
            np.save(staged / f"{t}.rows.npy", r)
            np.save(staged / f"{t}.vectors.npy", v)
            index = Index(dim, dtype="f32", M=M, ef_construction=ef_construction, seed=seed)
            if len(r):
                index.add(r, v, num_threads=0)
            index.ef = ef_search
            index.save(staged / f"{t}.upf")
            counts[t] = len(r)
        files = {}
        for name in (*_FIXED_FILES, *_type_files()):
            path = staged / name
            files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest: dict[str, Any] = {
            "format": RECOMMENDATIONS_FORMAT, "format_version": RECOMMENDATIONS_FORMAT_VERSION,
            "package_version": __version__, "model_version": model_version, "created_unix": int(time.time()),
            "dims": {"dim": int(dim), "n_products": n, "n_buckets": fz.vocab_size, **{f"n_{t}": c for t, c in counts.items()}},
            "token_types": list(TOKEN_TYPES),
            "index": {"dtype": "f32", "M": M, "ef_construction": ef_construction, "ef_search": ef_search, "seed": seed},
            "files": files,
        }
        manifest.update(extra or {})
        (staged / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    commit_staged(staged, bundle_dir, overwrite=overwrite)
    return manifest


def read_recommendations_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check manifest.json alone. FileNotFoundError when absent; FormatError when it is not a
    recommendations manifest of a version this package reads."""
    given = Path(bundle_dir)
    if not given.is_dir():
        raise FileNotFoundError(f"bundle directory {given} does not exist")
    root = recommendations_dir(given)
    path = root / _MANIFEST
    if not path.is_file():
        what = "a search bundle without recommendations" if root != given else "not a recommendations bundle"
        raise FileNotFoundError(f"{path} is missing: {given} is {what} "
                                "(create one with `upper-fast export-interactions RUN BUNDLE`)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RECOMMENDATIONS_FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        hint = " (a search bundle: load it with upper_fast.Retriever)" if fmt == "upper_fast.bundle" else ""
        raise FormatError(f"{path} is not a recommendations manifest (format {fmt!r} != {RECOMMENDATIONS_FORMAT!r}){hint}")
    if manifest.get("format_version") != RECOMMENDATIONS_FORMAT_VERSION:
        raise FormatError(f"{path} has format version {manifest.get('format_version')!r}; this upper_fast {__version__} "
                          f"reads version {RECOMMENDATIONS_FORMAT_VERSION} (re-export the bundle)")
    files, dims = manifest.get("files"), manifest.get("dims")
    expected = {*_FIXED_FILES, *_type_files()}
    if not isinstance(files, dict) or set(files) != expected:
        raise FormatError(f"{path} lists files {sorted(files) if isinstance(files, dict) else files!r}, expected {sorted(expected)}")
    for name, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str):
            raise FormatError(f"{path}: files[{name!r}] must be {{'bytes': int, 'sha256': str}} (damaged manifest; re-export)")
    if not isinstance(dims, dict) or not all(isinstance(dims.get(k), int) for k in ("dim", "n_products", "n_buckets")):
        raise FormatError(f"{path}: dims must hold integers dim, n_products, n_buckets (damaged manifest; re-export)")
    return manifest


def verify_recommendations_bundle(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the manifest and re-hash every file; FormatError naming the first damaged or missing file."""
    manifest = read_recommendations_manifest(bundle_dir)
    root = recommendations_dir(bundle_dir)
    for name, entry in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise FormatError(f"bundle file {path} is missing")
        if path.stat().st_size != entry["bytes"]:
            raise FormatError(f"bundle file {path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']} "
                              "(truncated or replaced)")
        if sha256_file(path) != entry["sha256"]:
            raise FormatError(f"bundle file {path} fails its sha256 check (damaged or replaced)")
    return manifest


def _normalised(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class _State:
    root: Path
    manifest: dict[str, Any]
    ids: StringIdMap
    product_ids: list[str]
    titles: list[str]
    featurizer: Featurizer
    subwords: np.ndarray                # (n_buckets, dim) float32
    position: dict[str, np.ndarray]     # type -> (n_products,) int64 row in vectors[type], -1 if none
    vectors: dict[str, np.ndarray]      # type -> (n_type, dim) float32 normalised
    indexes: dict[str, Index]


def _load_state(bundle_dir: str | os.PathLike[str]) -> _State:
    manifest = verify_recommendations_bundle(bundle_dir)
    root = recommendations_dir(bundle_dir)
    dims = manifest["dims"]
    product_ids = (root / "product_ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    titles = (root / "titles.txt").read_text(encoding="utf-8").split("\n")[:-1]
    n = dims["n_products"]
    if len(product_ids) != n or len(titles) != n:
        raise FormatError(f"{root}: product_ids.txt / titles.txt have {len(product_ids)} / {len(titles)} lines, "
                          f"the manifest says {n}")
    featurizer = Featurizer(FeaturizerConfig.from_dict(json.loads((root / "featurizer.json").read_text())))
    subwords = np.load(root / "subwords.npy", allow_pickle=False)
    if subwords.shape != (dims["n_buckets"], dims["dim"]) or subwords.dtype != np.float32:
        raise FormatError(f"{root}/subwords.npy is {subwords.shape} {subwords.dtype}, expected "
                          f"({dims['n_buckets']}, {dims['dim']}) float32")
    position, vectors, indexes = {}, {}, {}
    for t in TOKEN_TYPES:
        rows = np.load(root / f"{t}.rows.npy", allow_pickle=False)
        vecs = np.load(root / f"{t}.vectors.npy", allow_pickle=False)
        if rows.ndim != 1 or vecs.shape != (len(rows), dims["dim"]) or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
            raise FormatError(f"{root}: {t}.rows.npy / {t}.vectors.npy do not match (rows {rows.shape}, vectors {vecs.shape})")
        pos = np.full(n, -1, dtype=np.int64)
        pos[rows] = np.arange(len(rows))
        position[t], vectors[t] = pos, np.ascontiguousarray(vecs, dtype=np.float32)
        indexes[t] = Index.load(root / f"{t}.upf")
    return _State(root, manifest, StringIdMap(product_ids), product_ids, titles, featurizer, subwords, position,
                  vectors, indexes)


class Recommender:
    """Serves a recommendations bundle: `recommend` (one product) and `for_user` (recent actions).

    Thread-safe; `swap` replaces the bundle under running queries (each query uses one bundle)."""

    def __init__(self, state: _State) -> None:
        self._state = state
        self._swap_lock = threading.Lock()

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike[str]) -> Recommender:
        """Load a bundle, verifying every file's sha256 (FormatError on damage, FileNotFoundError if absent)."""
        return cls(_load_state(bundle_dir))

    def swap(self, bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Load another bundle fully (checksums verified), then switch to it; returns its manifest.

        On any error the current bundle keeps serving and the error propagates."""
        state = _load_state(bundle_dir)
        with self._swap_lock:
            self._state = state
        return state.manifest

    @property
    def manifest(self) -> dict[str, Any]:
        return self._state.manifest

    def title(self, product_id: str) -> str | None:
        s = self._state
        row = s.ids.get(product_id)
        return (s.titles[row] or None) if row >= 0 else None

    def _subword_vector(self, s: _State, title: str) -> np.ndarray | None:
        terms = s.featurizer.term_ids(title)
        terms = terms[(terms > 0) & (terms < s.subwords.shape[0])]
        if len(terms) == 0:
            return None
        v = s.subwords[terms].mean(axis=0)
        norm = float(np.linalg.norm(v))
        return (v / norm).astype(np.float32) if norm > 0 else None

    def _source_vector(self, s: _State, product_id: str, from_type: str, title: str | None) -> tuple[np.ndarray | None, str]:
        """(vector or None, note): the trained vector, else the title's subword vector."""
        row = s.ids.get(product_id)
        if row >= 0 and s.position[from_type][row] >= 0:
            return s.vectors[from_type][s.position[from_type][row]], ""
        text = title or (s.titles[row] if row >= 0 else "")
        if text:
            v = self._subword_vector(s, text)
            if v is not None:
                return v, ""
        if row < 0:
            return None, (f"product {product_id!r} is not in this bundle and no title was given "
                          "(pass title= to get a vector from its title's words)")
        return None, (f"product {product_id!r} has no {from_type!r} vector (never {_VERBS[from_type]} in the training "
                      "sessions) and no title to build one from")

    def recommend(self, product_id: str, from_: str = "view", to: str = "add_to_cart", k: int = 10,
                  title: str | None = None, ef: int | None = None) -> Recommendations:
        """The k products whose `to` vectors are nearest to `product_id`'s `from_` vector (itself excluded).

        A product the bundle has no `from_` vector for uses its title's subwords (`title`, or the
        bundle's); without one the result is empty and `note` says why. Raises ValueError for an unknown
        interaction name or k < 1."""
        fr, tt = TOKEN_TYPES[token_type(from_)], TOKEN_TYPES[token_type(to)]
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        s = self._state
        vec, note = self._source_vector(s, product_id, fr, title)
        if vec is None:
            return Recommendations([], note)
        hits = self._neighbours(s, vec, tt, k, exclude={s.ids.get(product_id)}, ef=ef)
        reason = f"because you {_VERBS[fr]} {product_id}"
        out = [Recommendation(s.product_ids[r], sc, reason, product_id, fr, s.titles[r] or None) for r, sc in hits]
        return Recommendations(out, None if out else f"the bundle has no {tt!r} vectors to suggest")

    def for_user(self, recent: Sequence[tuple[str, str] | tuple[str, str, str | None]], to: str = "add_to_cart",
                 k: int = 10, last_views: int = DEFAULT_LAST_VIEWS, last_carts: int = DEFAULT_LAST_CARTS,
                 ef: int | None = None) -> Recommendations:
        """Merge the neighbours of a shopper's recent actions, oldest first: (product_id, interaction[, title]).

        The last `last_views` views and the last `last_carts` add-to-carts (each product once) are
        asked for `to` neighbours; a candidate keeps its best score and that source's reason ("because
        you viewed X"). Products in `recent` are not suggested."""
        tt = TOKEN_TYPES[token_type(to)]
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        s = self._state
        actions = []
        for item in recent:
            if len(item) not in (2, 3):
                raise ValueError(f"recent entries are (product_id, interaction) or (product_id, interaction, title), got {item!r}")
            actions.append((item[0], TOKEN_TYPES[token_type(item[1])], item[2] if len(item) == 3 else None))
        sources: list[tuple[str, str, str | None]] = []
        for kind, limit in (("view", last_views), ("add_to_cart", last_carts)):
            seen: set[str] = set()
            for pid, typ, title in reversed(actions):
                if typ == kind and pid not in seen and len(seen) < limit:
                    seen.add(pid)
                    sources.append((pid, typ, title))
        if not sources:
            return Recommendations([], "no recent views or add-to-carts to start from")
        exclude = {s.ids.get(pid) for pid, _, _ in actions}
        best: dict[int, tuple[float, str, str]] = {}
        notes = []
        for pid, typ, title in sources:
            vec, note = self._source_vector(s, pid, typ, title)
            if vec is None:
                notes.append(note)
                continue
            for r, sc in self._neighbours(s, vec, tt, k, exclude, ef):
                if r not in best or sc > best[r][0]:
                    best[r] = (sc, pid, typ)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
        out = [Recommendation(s.product_ids[r], sc, f"because you {_VERBS[typ]} {pid}", pid, typ, s.titles[r] or None)
               for r, (sc, pid, typ) in ranked]
        return Recommendations(out, "; ".join(notes) if notes else None)

    @staticmethod
    def _neighbours(s: _State, vec: np.ndarray, to: str, k: int, exclude: set[int], ef: int | None) -> list[tuple[int, float]]:
        index = s.indexes[to]
        if len(index) == 0:
            return []
        want = min(len(index), k + len(exclude))
        top = index.search(np.ascontiguousarray(vec, dtype=np.float32), want, ef=ef)
        hits = [(int(r), float(sc)) for r, sc in zip(top.ids[0][: top.counts[0]], top.scores[0][: top.counts[0]])
                if int(r) not in exclude]
        return hits[:k]
