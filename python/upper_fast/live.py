"""The live catalogue and live user events of a `Retriever` (torch-free).

`Retriever.upsert_products` / `remove_products` / `observe` / `save` are thin wrappers over this
module. A batch of catalogue rows goes through three steps, and only the last one touches what
searches read:

1. prepare (no lock that searches wait on): validate the rows with the checks of `upper-fast
   validate` (`upper_fast.data.validate.validate_catalog_rows`), featurize them and run the bundle's
   product tower (`upper_fast.products.ProductEncoder`), compute their quality features and boost
   with the bundle's hydration (`upper_fast.products.quality_features`, the function export uses)
   and their hydrated index vectors (`upper_fast.bundle.hydrated_product_matrix`);
2. apply, under the write side of a `ReadWriteLock` (searches hold its read side): assign rows
   (an upserted id keeps its row; a new id gets the next one), write the per-row tables searches
   read (boost, graph vector, re-rank vector), then hand the rows and hydrated vectors to the
   index step (`Retriever._index_upsert`, the one call a different vector store replaces);
3. record what `save` needs to write the live state as a bundle.

A search therefore sees the catalogue before a batch or after it, never part of it. An error in
steps 1-2 leaves the Retriever serving exactly what it served before the call.

User events (`observe`) are copy-on-write per user: the new history (most recent first, bounded by
the model's N products and M queries) replaces the user's entry in one dict assignment, with a new
generation number; user vectors are cached under (user id, generation), so the next search of that
user computes its vector from the new history, and a search that read the old history can only fill
the old generation's cache slot.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast.interactions import INTERACTION_CODES as EVENT_CODES

__all__ = ["LiveCatalogue", "ProductIds", "ReadWriteLock", "observe_events"]


class ReadWriteLock:
    """Many readers (searches) or one writer (a batch being applied). A waiting writer blocks new
    readers, so a steady stream of searches cannot starve an upsert. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class ProductIds:
    """product_id <-> row of a catalogue that grows: the bundle's ids (an immutable native
    `StringIdMap`) and the ids appended live (rows len(base) ...). Mutated only under the write lock."""

    __slots__ = ("base", "n_base", "extra", "extra_ids")

    def __init__(self, base: Any) -> None:
        self.base = base
        self.n_base = len(base)
        self.extra: dict[str, int] = {}
        self.extra_ids: list[str] = []

    def __len__(self) -> int:
        return self.n_base + len(self.extra_ids)

    def get(self, key: str) -> int:
        row = self.base.get(key)
        return row if row >= 0 or not self.extra else self.extra.get(key, -1)

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        rows = self.base.lookup(keys)
        if self.extra:
            for i in np.flatnonzero(rows < 0):
                rows[i] = self.extra.get(keys[i], -1)
        return rows

    def keys_at(self, rows: np.ndarray) -> list[str]:
        if not self.extra_ids or rows.size == 0 or int(rows.max()) < self.n_base:
            return self.base.keys_at(rows)
        base = rows < self.n_base
        out = [""] * rows.shape[0]
        if base.any():
            for i, key in zip(np.flatnonzero(base), self.base.keys_at(np.ascontiguousarray(rows[base]))):
                out[i] = key
        for i in np.flatnonzero(~base):
            out[i] = self.extra_ids[int(rows[i]) - self.n_base]
        return out

    def append(self, ids: Sequence[str]) -> None:
        for key in ids:
            self.extra[key] = self.n_base + len(self.extra_ids)
            self.extra_ids.append(key)

    def truncate(self, n: int) -> None:
        """Forget appended ids from row n on (undoing a failed apply)."""
        for key in self.extra_ids[n - self.n_base:]:
            del self.extra[key]
        del self.extra_ids[n - self.n_base:]


@dataclass
class PreparedUpsert:
    """A validated, encoded and hydrated batch, not yet visible to searches."""

    ids: list[str]
    rows: np.ndarray          # (k,) int64 existing rows, -1 for new ids
    vectors: np.ndarray       # (k, D) float32 product-tower output
    quality: np.ndarray       # (k, F) float32 hydration features in [0, 1]
    boost: np.ndarray         # (k,) float32 scale * <w, quality>
    hydrated: np.ndarray      # (k, index_dim) float32 index vectors
    display: list[tuple[Any, ...]]  # (product_id, title, category, price) per row
    timings_ms: dict[str, float]


_GROWN = ("product_graph", "boost", "removed", "rerank_vectors")


class LiveCatalogue:
    """The live changes of one loaded bundle (`_Loaded.live`): the product encoder, grown tables,
    and the vectors / quality / display rows `save` writes. Created on the first change."""

    def __init__(self, state: Any) -> None:
        self.n_base = len(state.product_ids)
        self.encoder: Any = None
        from upper_fast.bundle import Bundle

        self.hyd = Bundle(state.path, state.manifest).hydration()
        self.hydration = self.hyd.raw
        self.weights, self.scale, self.mips = self.hyd.weights, self.hyd.scale, self.hyd.mips_augmented
        self.radius_sq: float | None = (state.manifest.get("live") or {}).get("mips_radius_sq")
        self.buffers: dict[str, np.ndarray] = {}
        # bf16/i8 hybrid bundles: the lexical channel's exact dense scores read the re-rank vectors
        self.fusion_shares_rerank = state.fusion_vectors is not None and state.fusion_vectors is state.rerank_vectors
        self.new_vectors = np.zeros((0, state.dims["query_dim"]), np.float32)   # rows n_base.. (capacity)
        self.new_quality = np.zeros((0, self.weights.shape[0]), np.float32)
        self.replaced_vectors: dict[int, np.ndarray] = {}  # base rows upserted again
        self.replaced_quality: dict[int, np.ndarray] = {}
        self.display: dict[str, tuple[Any, ...]] = {}
        self.upserted = 0
        self.removed = 0
        names = self.hydration.get("quality_normalisation", {}).get("names")
        self.quality_names = list(names) if names is not None else list(self.hydration.get("feature_names", []))

    # -- encoding (step 1)
    def product_encoder(self, state: Any) -> Any:
        if self.encoder is None:
            from upper_fast.bundle import PRODUCT_TOWER_FILES
            from upper_fast.products import ProductEncoder

            missing = [f for f in PRODUCT_TOWER_FILES if f not in state.manifest["files"]]
            if missing:
                raise ValueError(
                    f"bundle {state.path} has no product tower ({', '.join(missing)} missing), so it cannot encode "
                    "new products: re-export it with a current `upper-fast export` (it writes product_tower.onnx, "
                    "tokenizer.json and product_features.json); searches are unaffected")
            if "quality_normalisation" not in self.hydration:
                raise ValueError(f"bundle {state.path}: hydration.json has no quality_normalisation, so a new product's "
                                 "boost cannot be computed: re-export it with a current `upper-fast export`")
            self.encoder = ProductEncoder.load(state.path, state.featurizer, state.num_threads)
        return self.encoder

    def quality_columns(self, state: Any) -> list[str]:
        """The catalogue columns beyond the fixed schema that this bundle reads (quality features)."""
        from upper_fast.data.schema import KNOWN_COLUMNS

        encoder = self.product_encoder(state)
        known = set(KNOWN_COLUMNS["catalog"])
        return [c for c in dict.fromkeys([*self.quality_names, *encoder.quality_columns]) if c not in known]

    def mips_radius(self, state: Any) -> float:
        """R^2 of the bundle's MIPS augmentation, computed once from its vectors and quality."""
        if self.radius_sq is None:
            from upper_fast.bundle import mips_radius_sq

            self.radius_sq = mips_radius_sq(np.load(state.path / "product_vectors.npy", mmap_mode="r"),
                                            np.load(state.path / "quality.npy", mmap_mode="r"), self.scale)
        return float(self.radius_sq)

    def prepare(self, state: Any, rows: Any) -> PreparedUpsert:
        """Step 1: validate, encode, hydrate. Touches nothing a search reads."""
        from upper_fast.bundle import hydrated_product_matrix
        from upper_fast.data.validate import validate_catalog_rows
        from upper_fast.products import quality_columns_of, quality_features

        t0 = time.perf_counter()
        encoder = self.product_encoder(state)
        table = validate_catalog_rows(rows, self.quality_columns(state))
        ids = [str(p) for p in table.column("product_id").to_pylist()]
        if any(("\n" in p or "\r" in p) for p in ids):
            raise ValueError("product_id must not contain line breaks (one id per line in the bundle); nothing was applied")
        existing = state.product_map.lookup(ids)
        graph = np.zeros((len(ids), encoder.graph_dim), np.float32)
        known = existing >= 0
        graph[known] = state.product_graph[existing[known]]  # an upserted product keeps its graph node
        t1 = time.perf_counter()
        vectors = encoder.encode(table, graph)
        t2 = time.perf_counter()
        quality = quality_features(quality_columns_of(table, self.quality_names), self.hydration["quality_normalisation"])
        boost = self.hyd.boost(quality)  # as the loader computes it
        hydrated = hydrated_product_matrix(vectors, quality, self.scale, self.mips,
                                           self.mips_radius(state) if self.mips else None)
        if not np.isfinite(hydrated).all():
            raise ValueError("the product tower gave a non-finite vector for these rows; nothing was applied")
        t3 = time.perf_counter()
        columns = [table.column(c).to_pylist() if c in table.column_names else [None] * len(ids)
                   for c in ("title", "category", "price")]
        display = list(zip(ids, *columns))
        timings = {"validate": (t1 - t0) * 1e3, "encode": (t2 - t1) * 1e3, "hydrate": (t3 - t2) * 1e3}
        return PreparedUpsert(ids, existing, vectors, quality, boost, hydrated, display, timings)

    # -- apply (step 2; the caller holds the write lock)
    def _grow(self, state: Any, n: int) -> None:
        """Make the per-row tables hold n rows (capacity grows by half, so appends are amortised O(1))."""
        for name in _GROWN:
            current = getattr(state, name)
            if current is None or current.shape[0] >= n:
                continue
            buf = self.buffers.get(name)
            if buf is None or buf.shape[0] < n:
                cap = max(n, int(current.shape[0] * 1.5) + 16)
                grown = np.zeros((cap, *current.shape[1:]), current.dtype)
                grown[: current.shape[0]] = current
                self.buffers[name] = buf = grown
            view = buf[:n]
            view[current.shape[0]:] = 0
            setattr(state, name, view)
        if self.fusion_shares_rerank:
            state.fusion_vectors = state.rerank_vectors
        elif state.fusion_vectors is not None and not state.fusion_vectors.flags.writeable:
            # lexical-only hits read their exact dense score here: keep replaced rows current
            state.fusion_vectors = np.array(state.fusion_vectors, dtype=np.float32, order="C")

    def _shrink(self, state: Any, n: int) -> None:
        for name in _GROWN:
            current = getattr(state, name)
            if current is not None and current.shape[0] > n:
                setattr(state, name, current[:n])

    def apply(self, state: Any, prep: PreparedUpsert, index_upsert: Any) -> tuple[int, int]:
        """Step 2: make the batch visible; returns (added, replaced). On any error everything is put
        back as it was and the error re-raised."""
        n = len(state.product_ids)
        rows = prep.rows.copy()
        new = rows < 0
        n_new = int(new.sum())
        rows[new] = n + np.arange(n_new, dtype=np.int64)
        old_rows = rows[~new]
        saved = {name: getattr(state, name)[old_rows].copy() for name in ("boost", "removed", "rerank_vectors")
                 if getattr(state, name) is not None}
        saved_fusion = state.fusion_vectors[old_rows].copy() if state.fusion_vectors is not None else None
        try:
            self._grow(state, n + n_new)
            state.boost[rows] = prep.boost
            state.removed[rows] = False
            if state.rerank_vectors is not None:
                state.rerank_vectors[rows] = prep.vectors
            if state.fusion_vectors is not None and not self.fusion_shares_rerank:
                base = rows < state.fusion_vectors.shape[0]
                state.fusion_vectors[rows[base]] = prep.vectors[base]
            state.product_map.append([prep.ids[i] for i in np.flatnonzero(new)])
            state.product_ids.extend(prep.ids[i] for i in np.flatnonzero(new))
            index_upsert(state, rows, prep.hydrated)
        except BaseException:
            self._undo(state, n, old_rows, saved, saved_fusion, rows[new], index_upsert)
            raise
        self._record(state, rows, prep)
        return n_new, int(len(rows) - n_new)

    def _undo(self, state: Any, n: int, old_rows: np.ndarray, saved: dict[str, np.ndarray],
              saved_fusion: np.ndarray | None, new_rows: np.ndarray, index_upsert: Any) -> None:
        for name, values in saved.items():
            getattr(state, name)[old_rows] = values
        if saved_fusion is not None:
            state.fusion_vectors[old_rows] = saved_fusion
        if len(state.product_ids) > n:
            del state.product_ids[n:]
            state.product_map.truncate(n)
        if state.backend is not None:  # an external store: deleting rows it never got is a no-op
            added = new_rows
        else:
            added = np.asarray([r for r in new_rows.tolist() if r in state.index], np.int64)
        if added.size:
            _store_remove(state, added)
        if old_rows.size:  # the replaced rows' previous vectors back into the index
            index_upsert(state, old_rows, self.hydrated_rows(state, old_rows))
            gone = old_rows[saved["removed"]] if "removed" in saved else old_rows[:0]
            if gone.size:
                _store_remove(state, gone)
        self._shrink(state, n)

    def vectors_of(self, state: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(product vectors (k, D), quality (k, F)) of rows as the live catalogue holds them now."""
        base_v = np.load(state.path / "product_vectors.npy", mmap_mode="r")
        base_q = np.load(state.path / "quality.npy", mmap_mode="r")
        v = np.zeros((len(rows), base_v.shape[1]), np.float32)
        q = np.zeros((len(rows), base_q.shape[1]), np.float32)
        for i, r in enumerate(rows.tolist()):
            if r >= self.n_base:
                v[i], q[i] = self.new_vectors[r - self.n_base], self.new_quality[r - self.n_base]
            else:
                v[i] = self.replaced_vectors.get(r, base_v[r])
                q[i] = self.replaced_quality.get(r, base_q[r])
        return v, q

    def hydrated_rows(self, state: Any, rows: np.ndarray) -> np.ndarray:
        from upper_fast.bundle import hydrated_product_matrix

        v, q = self.vectors_of(state, rows)
        return hydrated_product_matrix(v, q, self.scale, self.mips, self.mips_radius(state) if self.mips else None)

    def _record(self, state: Any, rows: np.ndarray, prep: PreparedUpsert) -> None:
        top = int(rows.max(initial=-1)) + 1 - self.n_base
        if top > self.new_vectors.shape[0]:
            cap = max(top, int(self.new_vectors.shape[0] * 1.5) + 16)
            for name in ("new_vectors", "new_quality"):
                old = getattr(self, name)
                grown = np.zeros((cap, old.shape[1]), np.float32)
                grown[: old.shape[0]] = old
                setattr(self, name, grown)
        for i, r in enumerate(rows.tolist()):
            if r >= self.n_base:
                self.new_vectors[r - self.n_base] = prep.vectors[i]
                self.new_quality[r - self.n_base] = prep.quality[i]
            else:
                self.replaced_vectors[r] = prep.vectors[i]
                self.replaced_quality[r] = prep.quality[i]
        for item in prep.display:
            self.display[item[0]] = item
        self.upserted += len(rows)

    def remove(self, state: Any, ids: Sequence[str], index_remove: Any) -> int:
        """Rows of `ids` out of every result (the caller holds the write lock). Unknown ids raise
        ValueError before anything changes; removing a removed product again is a no-op."""
        if isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a sequence of product ids; for one product pass [product_id]")
        keys = [str(p) for p in ids]
        rows = state.product_map.lookup(keys) if keys else np.zeros(0, np.int64)
        unknown = [k for k, r in zip(keys, rows.tolist()) if r < 0]
        if unknown:
            raise ValueError(f"{len(unknown)} product ids are not in the catalogue, nothing was removed: {unknown[:10]}")
        rows = np.unique(rows[~state.removed[rows]])
        if rows.size:
            index_remove(state, rows)
            state.removed[rows] = True
            self.removed += int(rows.size)
        return int(rows.size)

    # -- save (step 3)
    def save(self, state: Any, bundle_dir: str | os.PathLike[str], overwrite: bool) -> dict[str, Any]:
        """Write the live state as a complete bundle, atomically (staging directory, one rename)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from upper_fast.bundle import DISPLAY_FILE, LEXICAL_DIR, commit_staged, staging_dir, write_manifest

        src = state.path
        if Path(bundle_dir).resolve() == src.resolve():
            raise ValueError(f"save into the loaded bundle's own directory {src} is refused (it is memory-mapped "
                             "while serving): save to a new path, then swap() to it")
        if Path(bundle_dir).exists() and not overwrite:
            raise FileExistsError(f"{Path(bundle_dir).resolve()} already exists (pass overwrite=True to replace it)")
        written = {"product_ids.txt", "product_graph.npy", "product_vectors.npy", "quality.npy", "index.upf",
                   "users.parquet", "manifest.json", DISPLAY_FILE}
        n = len(state.product_ids)
        staged = staging_dir(bundle_dir)
        try:
            for name in state.manifest["files"]:
                if name in written or name.startswith(LEXICAL_DIR + "/"):
                    continue
                shutil.copyfile(src / name, staged / name)
            if (src / LEXICAL_DIR).is_dir():
                shutil.copytree(src / LEXICAL_DIR, staged / LEXICAL_DIR, ignore=shutil.ignore_patterns("*.lock"))
            (staged / "product_ids.txt").write_text("".join(p + "\n" for p in state.product_ids), encoding="utf-8")
            np.save(staged / "product_graph.npy", np.ascontiguousarray(state.product_graph))
            vectors, quality = self._all_vectors(state, n)
            np.save(staged / "product_vectors.npy", vectors)
            np.save(staged / "quality.npy", quality)
            self._live_index(state, n).save(str(staged / "index.upf"))
            pq.write_table(_users_table(state), staged / "users.parquet")
            if (src / DISPLAY_FILE).is_file():
                pq.write_table(self._display_table(pa, pq.read_table(src / DISPLAY_FILE)), staged / DISPLAY_FILE)
            keep = {k: v for k, v in state.manifest.items() if k not in (
                "format", "format_version", "package_version", "model_version", "created_unix", "dims", "dtypes", "files")}
            previous = state.manifest.get("live") or {}
            keep["live"] = {
                "saved_from": str(src.resolve()), "saved_unix": int(time.time()),
                "products_upserted": int(previous.get("products_upserted", 0)) + self.upserted,
                "products_removed": int(state.removed.sum()),
                "users_observed": int(previous.get("users_observed", 0)) + len(state.live_histories),
                "lexical_rows": int(previous.get("lexical_rows", self.n_base)),
            }
            if self.mips:
                keep["live"]["mips_radius_sq"] = self.mips_radius(state)
            dims = dict(state.manifest["dims"], n_products=n)
            manifest = write_manifest(staged, model_version=state.model_version, dims=dims,
                                      dtypes=state.manifest["dtypes"], extra=keep)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        commit_staged(staged, bundle_dir, overwrite=overwrite)
        return manifest

    def _live_index(self, state: Any, n: int) -> Any:
        """The index of the live catalogue: the one searches use, or, when an external store serves
        them (`Retriever.load(backend=...)`), the bundle's index.upf with the live changes applied."""
        if state.index is not None:
            return state.index
        from upper_fast.index import Index

        index = Index.load(str(state.path / "index.upf"))
        changed = np.asarray(sorted({*self.replaced_vectors, *range(self.n_base, n)}), np.int64)
        if changed.size:
            index.add(changed, self.hydrated_rows(state, changed), num_threads=1, replace=True)
        gone = np.asarray([r for r in np.flatnonzero(state.removed[:n]).tolist() if r in index], np.int64)
        if gone.size:
            index.mark_deleted(gone)
        return index

    def _all_vectors(self, state: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        base_v = np.load(state.path / "product_vectors.npy", mmap_mode="r")
        base_q = np.load(state.path / "quality.npy", mmap_mode="r")
        vectors = np.zeros((n, base_v.shape[1]), np.float32)
        quality = np.zeros((n, base_q.shape[1]), np.float32)
        vectors[: self.n_base], quality[: self.n_base] = base_v, base_q
        for r, v in self.replaced_vectors.items():
            vectors[r] = v
        for r, q in self.replaced_quality.items():
            quality[r] = q
        vectors[self.n_base:] = self.new_vectors[: n - self.n_base]
        quality[self.n_base:] = self.new_quality[: n - self.n_base]
        return vectors, quality

    def _display_table(self, pa: Any, table: Any) -> Any:
        if not self.display:
            return table
        ids = table.column("product_id").to_pylist()
        keep = [i for i, p in enumerate(ids) if str(p) not in self.display]
        table = table.take(pa.array(keep, pa.int64()))
        names = ("product_id", "title", "category", "price")
        cols = {name: [item[j] for item in self.display.values()] for j, name in enumerate(names) if name in table.column_names}
        return pa.concat_tables([table, pa.table(cols, schema=table.schema)])


def _store_remove(state: Any, rows: np.ndarray) -> None:
    """Rows out of the vector store searches use: the in-process index, or the backend."""
    if state.backend is not None:
        state.backend.remove(rows)
    else:
        state.index.mark_deleted(rows)


def live_catalogue(state: Any) -> LiveCatalogue:
    """The state's live catalogue, created on first use (callers hold the Retriever's write mutex)."""
    if state.live is None:
        state.live = LiveCatalogue(state)
    return state.live


def _users_table(state: Any) -> Any:
    """users.parquet of the live state: the bundle's histories with every observed user's current one."""
    import pyarrow as pa

    ids = state.user_map.keys()
    rows, types, queries, country = [], [], [], []
    for u in range(len(ids)):
        entry = state.live_histories.get(u)
        if entry is None:
            r, t, q, c = state.user_rows[u], state.user_types[u], state.user_queries[u], state.user_country[u]
        else:
            r, t, q, c = entry[:4]
        valid = r >= 0
        rows.append(r[valid].tolist())
        types.append(t[valid].tolist())
        queries.append(list(q))
        country.append(int(c))
    return pa.table({"user_id": pa.array(ids, pa.string()), "country": pa.array(country, pa.int32()),
                     "hist_rows": pa.array(rows, pa.list_(pa.int32())), "hist_types": pa.array(types, pa.list_(pa.int8())),
                     "hist_queries": pa.array(queries, pa.list_(pa.string()))})


_EVENT_FIELDS = ("user_id", "product_id", "interaction", "timestamp", "query")


def _event_rows(events: Any) -> list[tuple[Any, ...]]:
    """Events as (user_id, product_id, interaction, timestamp, query) tuples."""
    try:
        import pyarrow as pa

        if isinstance(events, pa.Table):
            missing = [f for f in ("user_id", "interaction", "timestamp") if f not in events.column_names]
            if missing:
                raise ValueError(f"events lack columns {missing}; expected {list(_EVENT_FIELDS)}")
            cols = [events.column(f).to_pylist() if f in events.column_names else [None] * events.num_rows
                    for f in _EVENT_FIELDS]
            return list(zip(*cols))
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    if isinstance(events, (dict, str, bytes)) or not isinstance(events, Sequence):
        raise TypeError("events must be a list of dicts or (user_id, product_id, interaction, timestamp, query) "
                        f"tuples, or a pyarrow Table; got {type(events).__name__}")
    out = []
    for i, e in enumerate(events):
        if isinstance(e, dict):
            if "user_id" not in e or "interaction" not in e or "timestamp" not in e:
                raise ValueError(f"events[{i}] lacks user_id, interaction or timestamp: {e!r}")
            out.append((e["user_id"], e.get("product_id"), e["interaction"], e["timestamp"], e.get("query")))
        elif isinstance(e, tuple) and len(e) == 5:
            out.append(e)
        else:
            raise TypeError(f"events[{i}] must be a dict or a 5-tuple {_EVENT_FIELDS}, got {e!r}")
    return out


def observe_events(state: Any, events: Any) -> dict[str, int]:
    """Apply user events to the state's histories (the caller serialises observers). All events are
    checked first: a bad one raises ValueError and none is applied. Returns counts."""
    checked = []
    for i, (uid, pid, interaction, ts, query) in enumerate(_event_rows(events)):
        if not isinstance(uid, str):
            raise ValueError(f"event {i}: user_id must be a str, got {uid!r}")
        code = EVENT_CODES.get(interaction) if isinstance(interaction, str) else interaction
        if not isinstance(code, (int, np.integer)) or isinstance(code, bool) or not 0 <= code <= 4:
            raise ValueError(f"event {i}: unknown interaction {interaction!r}; expected one of "
                             f"{list(EVENT_CODES)} or a code 0..4")
        if not isinstance(ts, (int, np.integer)) or isinstance(ts, bool):
            raise ValueError(f"event {i}: timestamp must be int seconds, got {ts!r}")
        if query is not None and not isinstance(query, str):
            raise ValueError(f"event {i}: query must be a str or None, got {query!r}")
        if pid is not None and not isinstance(pid, str):
            raise ValueError(f"event {i}: product_id must be a str or None, got {pid!r}")
        checked.append((int(ts), i, uid, pid, int(code), query))
    if len(checked) > 1:
        checked.sort()  # time order within the batch (stable by position)
    N, M = state.dims["hist_items"], state.dims["hist_queries"]
    counts = {"applied": 0, "unknown_user": 0, "unknown_product": 0}
    user_map, histories, cache = state.user_map, state.live_histories, state.user_cache
    for _, _, uid, pid, code, query in checked:
        u = user_map.get(uid)
        if u < 0:
            counts["unknown_user"] += 1
            continue
        entry = histories.get(u)
        if entry is None:
            rows, types = state.user_rows[u], state.user_types[u]
            queries, country, gen = state.user_queries[u], int(state.user_country[u]), 0
        else:
            rows, types, queries, country, gen = entry
        row = state.product_map.get(pid) if (code > 0 and pid is not None) else -1
        if code > 0 and pid is not None and row < 0:
            counts["unknown_product"] += 1
        if row >= 0:
            new_rows = np.empty(N, np.int64)
            new_rows[0] = row
            new_rows[1:] = rows[:-1]
            new_types = np.empty(N, np.int64)
            new_types[0] = code
            new_types[1:] = types[:-1]
            rows, types = new_rows, new_types
        if query:
            key = state.featurizer.query_key(query)
            if key:
                queries = [key, *(q for q in queries if q != key)][:M]
        histories[u] = (rows, types, queries, country, gen + 1)  # one atomic publish
        if cache is not None:
            cache.discard((uid, gen))
        counts["applied"] += 1
    return counts
