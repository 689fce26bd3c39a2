"""The serving bundle: a versioned directory that holds everything a `Retriever` needs.

Layout (see docs/design.md "Bundle" and docs/serving.md):

    manifest.json        format + version, package/model versions, dims, dtypes, sha256 of every file
    query_tower.onnx     the query-user tower (dynamic batch)
    featurizer.json      FeaturizerConfig fields (the same hashing as training)
    query_nodes.txt      normalized queries that have a graph node, one per line
    query_graph.npy      (n_query_nodes, G) float32
    product_ids.txt      product ids, one per line; row i of every product array
    product_graph.npy    (n_products, G) float32, zeros where a product has no graph node
    product_vectors.npy  (n_products, D) float32, L2-normalised product-tower output
    quality.npy          (n_products, F) float32, quality features normalised to [0, 1]
    hydration.json       boosting weights w (F,), feature scale, feature names, tuning report
    thresholds.json      hinge thresholds on the raw cosine, per interaction type + negative
    users.parquet        per-user recent history and country at export time
    countries.json       country names; index i + 1 is the model's country id (0 = unknown)
    index.upf            upper_fast.Index over the hydrated product vectors

Optional, both or neither (bundles exported before they existed still load; the Retriever then runs
query_tower.onnx for every search):

    user_tower.onnx      the user inputs of query_tower.onnx -> user_vector (dynamic batch)
    query_part.onnx      query inputs + user_vector -> query_vector; query_part(q, user_tower(u)) is
                         query_tower(q, u), so a user's vector is computed once and reused

Optional, all or none (bundles without them still load and serve; `Retriever.upsert_products` then
says to re-export): the product tower and its featurization (`upper_fast.products`)

    product_tower.onnx   catalogue row inputs -> product vector (text encoder included; dynamic batch)
    tokenizer.json       the text encoder's subword tokenizer
    product_features.json  categorical vocabularies, quality-bucket edges, text length

Optional, all or none (bundles without them still load and serve the dense channel only):

    lexical.json         the lexical channel's BM25 index description (`upper_fast.lexical`)
    lexical/...          its tantivy index files, each listed in the manifest
    fusion.json          how dense and lexical candidates are fused ("rrf" or "learned" weights)

`write_manifest` checksums every file; `read_manifest` reads the manifest alone (cheap, no model);
`verify_bundle` re-hashes every file and raises `upper_fast.FormatError` on any damage.
`staging_dir` / `commit_staged` give the atomic write: build in a sibling temp dir, then rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from upper_fast._core import FormatError, __version__

__all__ = ["BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "BUNDLE_FILES", "ONNX_INPUTS", "PRODUCT_TOWER_FILES",
           "QUERY_PART_INPUTS", "SPLIT_TOWER_FILES", "USER_INPUTS", "Bundle", "Hydration", "UserHistories",
           "add_lexical_channel",
           "hydrated_product_matrix", "read_manifest", "verify_bundle", "without_query_nodes", "write_bundle"]

BUNDLE_FORMAT = "upper_fast.bundle"
# Bumped on any incompatible change of the layout; readers accept exactly the versions they know.
BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUNDLE_FILES = (
    "query_tower.onnx",
    "featurizer.json",
    "query_nodes.txt",
    "query_graph.npy",
    "product_ids.txt",
    "product_graph.npy",
    "product_vectors.npy",
    "quality.npy",
    "hydration.json",
    "thresholds.json",
    "users.parquet",
    "countries.json",
    "index.upf",
)
# Optional pair (both or neither): the query-user tower split at the user vector (docs/serving.md).
SPLIT_TOWER_FILES = ("user_tower.onnx", "query_part.onnx")
# Optional (all or none): the product tower as ONNX and what featurizes a catalogue row for it, so a
# service can encode new products without torch (`upper_fast.products`, `Retriever.upsert_products`).
PRODUCT_TOWER_FILES = ("product_tower.onnx", "tokenizer.json", "product_features.json")
# Optional (all or none): the lexical channel of hybrid retrieval (`upper_fast.lexical`); its index
# files live under LEXICAL_DIR/ and are listed one by one in the manifest.
LEXICAL_FILES = ("lexical.json", "fusion.json")
LEXICAL_DIR = "lexical"
# The inputs of query_tower.onnx, in order (the export writes them, the Retriever binds them), and of
# the split tower's two graphs.
ONNX_INPUTS = ("query_terms", "query_graph", "query_graph_mask", "hist_item_graph", "hist_item_type",
               "hist_query_terms", "user_country")
USER_INPUTS = ("hist_item_graph", "hist_item_type", "hist_query_terms", "user_country")
QUERY_PART_INPUTS = ("query_terms", "query_graph", "query_graph_mask", "user_vector")
# bf16/i8 indexes: the walk returns this many percent of k candidates, re-ranked in float32 (the
# Retriever's default; `hydrated_ann_recall` measures the same thing at export).
RERANK_FACTOR_PCT = 150


# What `upper-fast search` shows beside each hit (product_id, title, category, price); optional.
DISPLAY_FILE = "display.parquet"

def rerank_candidates(k: int, n: int) -> int:
    """How many candidates a compact index's walk returns for k hits over n products."""
    return min(n, -(-k * RERANK_FACTOR_PCT // 100))


# Dimensions the Retriever reads (docs/design.md, "Model I/O").
REQUIRED_DIMS = ("graph_dim", "query_dim", "hist_items", "hist_queries", "query_terms")
_REQUIRED_KEYS = ("format", "format_version", "package_version", "model_version", "dims", "dtypes", "files")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def write_manifest(bundle_dir: str | os.PathLike[str], *, model_version: str, dims: dict[str, int],
                   dtypes: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Checksum every bundle file in `bundle_dir` and write manifest.json; returns the manifest.

    Raises FileNotFoundError naming the first missing bundle file.
    """
    root = Path(bundle_dir)
    files: dict[str, dict[str, Any]] = {}
    split = [name for name in SPLIT_TOWER_FILES if (root / name).is_file()]
    if split and len(split) != len(SPLIT_TOWER_FILES):
        raise FileNotFoundError(f"{root} has {split[0]} but not the rest of {list(SPLIT_TOWER_FILES)} (both or neither)")
    product = [name for name in PRODUCT_TOWER_FILES if (root / name).is_file()]
    if product and len(product) != len(PRODUCT_TOWER_FILES):
        raise FileNotFoundError(f"{root} has {product} but not all of {list(PRODUCT_TOWER_FILES)} (all or none)")
    lexical: list[str] = []
    if any((root / name).is_file() for name in LEXICAL_FILES):
        lexical = [*LEXICAL_FILES, *_lexical_index_files(root)]
    for name in (*BUNDLE_FILES, *split, *product, *lexical):
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"bundle file {name} is missing from {root}")
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "package_version": __version__,
        "model_version": model_version,
        "created_unix": int(time.time()),
        "dims": dict(dims),
        "dtypes": dict(dtypes),
        "files": files,
    }
    if extra:
        manifest.update(extra)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check manifest.json without touching the other files (cheap; for `upper-fast info`).

    Raises FileNotFoundError when the directory or manifest is absent, and upper_fast.FormatError when
    the manifest is not JSON, is not an upper_fast bundle, or has a format version this package
    cannot read.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"bundle directory {root} does not exist")
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {root} is not an upper_fast bundle (create one with `upper-fast export`)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise FormatError(f"{path} is not an upper_fast bundle manifest (format != {BUNDLE_FORMAT!r})")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise FormatError(f"{path} lacks required keys {missing}")
    version = manifest["format_version"]
    if version != BUNDLE_FORMAT_VERSION:
        raise FormatError(f"{path} has bundle format version {version}; this upper_fast {__version__} reads "
                          f"version {BUNDLE_FORMAT_VERSION} (re-export the bundle with this version)")
    files = manifest["files"]
    if isinstance(files, dict):
        _check_lexical_names(files, path)
        files = {n: v for n, v in files.items() if not _is_lexical_name(n)}
    allowed = [set(BUNDLE_FILES) | split | product for split in (set(), set(SPLIT_TOWER_FILES))
               for product in (set(), set(PRODUCT_TOWER_FILES))]
    if not isinstance(files, dict) or set(files) not in allowed:
        raise FormatError(f"{path} lists files {sorted(files) if isinstance(files, dict) else files!r}, "
                          f"expected {sorted(BUNDLE_FILES)}, optionally with all of {sorted(SPLIT_TOWER_FILES)} "
                          f"and/or all of {sorted(PRODUCT_TOWER_FILES)}")
    _check_manifest_schema(manifest, path)
    return manifest


def _lexical_index_files(root: Path) -> list[str]:
    """The lexical index's files as manifest names ("lexical/<file>"), without tantivy's lock files
    (created empty when an index is opened; not index data)."""
    folder = root / LEXICAL_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{root} has {LEXICAL_FILES[0]} but no {LEXICAL_DIR}/ index directory")
    return sorted(f"{LEXICAL_DIR}/{p.name}" for p in folder.iterdir() if p.is_file() and not p.name.endswith(".lock"))


def _is_lexical_name(name: str) -> bool:
    return name in LEXICAL_FILES or name.startswith(LEXICAL_DIR + "/")


def _check_lexical_names(files: dict[str, Any], path: Path) -> None:
    """The lexical files are all present or all absent, and index files are plain names in lexical/."""
    names = [n for n in files if _is_lexical_name(n)]
    if not names:
        return
    index_files = [n for n in names if n not in LEXICAL_FILES]
    if not all(n in files for n in LEXICAL_FILES) or not index_files:
        raise FormatError(f"{path} lists part of the lexical channel ({sorted(names)[:4]}...): expected "
                          f"{list(LEXICAL_FILES)} and the files of {LEXICAL_DIR}/, or none of them")
    for n in index_files:
        leaf = n[len(LEXICAL_DIR) + 1:]
        if not leaf or "/" in leaf or "\\" in leaf or leaf in (".", ".."):
            raise FormatError(f"{path} lists a lexical file with a bad name {n!r} (damaged manifest)")


def _is_int(value: Any, low: int = 0, high: int = 1 << 40) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_manifest_schema(manifest: dict[str, Any], path: Path) -> None:
    """The manifest carries the other files' checksums, so nothing checks its own bytes: every field
    the loader reads is validated here, so a damaged manifest is a FormatError, not a KeyError later."""
    def bad(what: str) -> FormatError:
        return FormatError(f"{path}: {what} (damaged manifest; re-export the bundle)")

    for key in ("package_version", "model_version"):
        if not isinstance(manifest[key], str):
            raise bad(f"{key} must be a string")
    for name, entry in manifest["files"].items():
        if (not isinstance(entry, dict) or not _is_int(entry.get("bytes"))
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64):
            raise bad(f"files[{name!r}] must be {{'bytes': int, 'sha256': 64 hex digits}}")
    dims = manifest["dims"]
    if not isinstance(dims, dict):
        raise bad("dims must be an object")
    for key in REQUIRED_DIMS:
        if not _is_int(dims.get(key), 1, 1 << 20):
            raise bad(f"dims[{key!r}] must be an integer in [1, 2^20], got {dims.get(key)!r}")
    for key, value in dims.items():
        if not _is_int(value, 0, 1 << 40):
            raise bad(f"dims[{key!r}] must be a non-negative integer, got {value!r}")
    if not isinstance(manifest["dtypes"], dict):
        raise bad("dtypes must be an object")
    index = manifest.get("index", {})
    if not isinstance(index, dict) or ("ef_search" in index and not _is_int(index["ef_search"], 1, 1 << 24)):
        raise bad("index must be an object whose ef_search is an integer in [1, 2^24]")


def verify_bundle(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the manifest and re-hash every file; returns the manifest.

    Raises upper_fast.FormatError naming the first file that is missing, has the wrong size or the
    wrong sha256 (a damaged or partially copied bundle).
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    for name in manifest["files"]:  # read_manifest checked the set of names
        entry = manifest["files"][name]
        path = root / name
        if not path.is_file():
            raise FormatError(f"bundle file {path} is missing")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise FormatError(f"bundle file {path} has {size} bytes, the manifest says {entry.get('bytes')} (truncated or replaced)")
        if sha256_file(path) != entry.get("sha256"):
            raise FormatError(f"bundle file {path} fails its sha256 check (damaged or replaced)")
    return manifest


@dataclass(frozen=True)
class UserHistories:
    """The per-user rows of users.parquet as arrays: ids (n_users,) list of str; rows (n_users, N)
    int64 product rows, -1 = none; types (n_users, N) int64 interaction codes; queries: per user the
    recent normalised queries (at most M); country (n_users,) int64 country ids. Most recent first."""

    ids: list[str]
    rows: np.ndarray
    types: np.ndarray
    queries: list[list[str]]
    country: np.ndarray


@dataclass(frozen=True)
class Hydration:
    """hydration.json: boosting weights (F,) float32 over the quality features, their scale, whether
    the index vectors carry the MIPS column, and the rest of the file (tuning report, quantile edges)."""

    weights: np.ndarray
    scale: float
    mips_augmented: bool
    raw: dict[str, Any]

    def boost(self, quality: np.ndarray) -> np.ndarray:
        """(n,) float32 boost of each product: scale * <w, f>, what the index adds to the cosine."""
        return (self.scale * (quality @ self.weights)).astype(np.float32)

    def query_tail(self) -> np.ndarray:
        """The columns a query vector gets after its own: [w (, 0)], so <[q ; tail], hydrated> =
        cosine + boost."""
        tail = [self.weights] + ([np.zeros(1, np.float32)] if self.mips_augmented else [])
        return np.ascontiguousarray(np.concatenate(tail).astype(np.float32))


@dataclass(frozen=True, eq=False)
class Bundle:
    """An opened bundle directory: the one reader of its files (names, manifest, parsing, shapes).

    `Bundle.open(path)` checks the manifest (and with verify every file's sha256); the methods read a
    file when asked, so opening is cheap and a reader pays only for what it uses. `Retriever.load`
    accepts a `Bundle` or a path.
    """

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, bundle_dir: str | os.PathLike[str] | Bundle, verify: bool = True) -> Bundle:
        """FileNotFoundError for a missing bundle, upper_fast.FormatError for a damaged, foreign or
        future-version one (with verify: any file whose size or sha256 differs from the manifest)."""
        if isinstance(bundle_dir, Bundle):
            return bundle_dir
        if not isinstance(bundle_dir, (str, os.PathLike)):
            raise TypeError(f"bundle must be a path or a Bundle, got {type(bundle_dir).__name__}")
        path = Path(bundle_dir)
        return cls(path, verify_bundle(path) if verify else read_manifest(path))

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        """Whether the manifest lists `name` (the optional parts: e.g. "user_tower.onnx")."""
        return name in self.manifest["files"]

    @property
    def has_split_tower(self) -> bool:
        return self.has(SPLIT_TOWER_FILES[0])

    @property
    def has_product_tower(self) -> bool:
        return self.has(PRODUCT_TOWER_FILES[0])

    @property
    def has_lexical(self) -> bool:
        return self.has(LEXICAL_FILES[0])

    @property
    def dims(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.manifest["dims"].items()}

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def live(self) -> dict[str, Any]:
        """The manifest's live section (a bundle written by `Retriever.save`), else {}."""
        return self.manifest.get("live") or {}

    def _lines(self, name: str) -> list[str]:
        return self.file(name).read_text(encoding="utf-8").split("\n")[:-1]

    def _json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def featurizer_config(self) -> Any:
        """The `FeaturizerConfig` the model was trained with."""
        from upper_fast.featurizer import FeaturizerConfig

        return FeaturizerConfig.from_dict(self._json("featurizer.json"))

    def query_keys(self) -> list[str]:
        """Normalised queries with a graph node; row i of `query_graph()`."""
        return self._lines("query_nodes.txt")

    def product_ids(self) -> list[str]:
        return self._lines("product_ids.txt")

    def query_graph(self) -> np.ndarray:
        return self._checked("query_graph.npy", (len(self.query_keys()), self.dims["graph_dim"]))

    def product_graph(self, n: int | None = None) -> np.ndarray:
        return self._checked("product_graph.npy", (self._n(n), self.dims["graph_dim"]))

    def product_vectors(self, n: int | None = None, mmap: bool = True) -> np.ndarray:
        """(n, D) float32 product-tower vectors; memory-mapped by default (paged in where read)."""
        return self._checked("product_vectors.npy", (self._n(n), self.dims["query_dim"]), "r" if mmap else None)

    def quality(self, n: int | None = None) -> np.ndarray:
        q = np.load(self.file("quality.npy"))
        if q.ndim != 2 or q.shape[0] != self._n(n):
            raise FormatError(f"bundle {self.path}: quality.npy has shape {q.shape}, expected ({self._n(n)}, F)")
        return q

    def hydration(self) -> Hydration:
        raw = self._json("hydration.json")
        return Hydration(np.asarray(raw["weights"], dtype=np.float32), float(raw["scale"]),
                         bool(raw.get("mips_augmented", False)), raw)

    def hydrated_products(self) -> np.ndarray:
        """(n, index_dim) float32: what the index holds (`hydrated_product_matrix`)."""
        hyd = self.hydration()
        # a bundle saved from a live Retriever keeps the MIPS radius its index was built with
        radius = self.live.get("mips_radius_sq") if hyd.mips_augmented else None
        out = hydrated_product_matrix(np.load(self.file("product_vectors.npy")), self.quality(), hyd.scale,
                                      hyd.mips_augmented, radius)
        if out.shape != (self._n(None), self.dims.get("index_dim", out.shape[1])):
            raise FormatError(f"bundle {self.path}: hydrated vectors {out.shape} disagree with the manifest dims")
        return out

    def thresholds(self) -> Any:
        """The `HingeThresholds` (calibrated at export where the manifest says so)."""
        from upper_fast.kernels import HingeThresholds

        return HingeThresholds.from_dict(self._json("thresholds.json"))

    def countries(self) -> list[str]:
        """Country names; the model's country id of countries()[i] is i + 1 (0 = unknown)."""
        return list(self._json("countries.json"))

    def user_histories(self) -> UserHistories:
        """users.parquet, cut to the model's N products and M queries."""
        import pyarrow.parquet as pq

        users = pq.read_table(self.file("users.parquet"))
        dims = self.dims
        N, M = dims["hist_items"], dims["hist_queries"]
        n_users = users.num_rows
        rows = np.full((n_users, N), -1, dtype=np.int64)
        types = np.zeros((n_users, N), dtype=np.int64)
        for u, (r, t) in enumerate(zip(users.column("hist_rows").to_pylist(), users.column("hist_types").to_pylist())):
            r, t = r[:N], t[:N]
            rows[u, : len(r)] = r
            types[u, : len(t)] = t
        return UserHistories(users.column("user_id").to_pylist(), rows, types,
                             [q[:M] for q in users.column("hist_queries").to_pylist()],
                             np.asarray(users.column("country").to_numpy(zero_copy_only=False), dtype=np.int64))

    def _n(self, n: int | None) -> int:
        if n is not None:
            return n
        return int(self.dims["n_products"]) if "n_products" in self.dims else len(self.product_ids())

    def _checked(self, name: str, shape: tuple[int, int], mmap_mode: str | None = None) -> np.ndarray:
        a = np.load(self.file(name), mmap_mode=mmap_mode)
        if a.shape != shape:
            raise FormatError(f"bundle {self.path}: {name} has shape {a.shape}, the manifest dims say {shape}")
        return a


def rebuild_index(bundle_dir: str | os.PathLike[str], M: int, ef_construction: int, seed: int = 0) -> dict[str, Any]:
    """Rebuild a bundle's index.upf over its hydrated vectors with another graph degree M and
    ef_construction, in place (for a bundle that is still being written: the export's staged
    directory), updating the manifest's index section and the file's size and sha256. The index keeps
    the manifest's ef_search. Returns the manifest."""
    from upper_fast.index import Index

    root = Path(bundle_dir)
    b = Bundle.open(root, verify=False)
    manifest = b.manifest
    hydrated = b.hydrated_products()
    index = Index(hydrated.shape[1], dtype=manifest["index"].get("dtype", "f32"), M=int(M),
                  ef_construction=int(ef_construction), seed=seed)
    index.add(np.arange(hydrated.shape[0], dtype=np.int64), hydrated, num_threads=0)
    index.ef = int(manifest["index"].get("ef_search", 128))
    path = root / "index.upf"
    index.save(str(path))
    manifest["index"].update({"M": int(M), "ef_construction": int(ef_construction)})
    manifest["files"]["index.upf"] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def without_query_nodes(bundle_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """A view of a bundle in the empty or new directory `dest` that serves every query as one the model
    has no graph node for: empty query_nodes.txt and query_graph.npy, every other file a symbolic link
    to the bundle's (the manifest too, so an ef_search set in the bundle applies to the view).

    An evaluation aid: a search for a known query through this view is what the same search would be
    if the query were new (terms only), which is how the export checks its ef on new-query traffic.
    Load it with `verify=False` (its two query files are not the manifest's)."""
    root = Path(bundle_dir).resolve()
    b = Bundle.open(root, verify=False)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ValueError(f"{out} is not empty: pass a new or empty directory for the view")
    for entry in root.iterdir():
        if entry.name not in ("query_nodes.txt", "query_graph.npy"):
            (out / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (out / "query_nodes.txt").write_text("", encoding="utf-8")
    np.save(out / "query_graph.npy", np.zeros((0, b.dims["graph_dim"]), np.float32))
    return out


def staging_dir(bundle_dir: str | os.PathLike[str]) -> Path:
    """A fresh temp directory beside `bundle_dir` (same filesystem, so the final rename is atomic)."""
    target = Path(bundle_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def commit_staged(staged: Path, bundle_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Move a fully written staging directory to `bundle_dir` with one rename.

    Readers never see a half-written bundle. With overwrite=True an existing bundle is first renamed
    aside and removed after the new one is in place. Raises FileExistsError when the target exists and
    overwrite is False.
    """
    target = Path(bundle_dir).resolve()
    if target.exists():
        if not overwrite:
            shutil.rmtree(staged, ignore_errors=True)
            raise FileExistsError(f"{target} already exists (pass overwrite=True / --overwrite to replace it)")
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, target)
    return target


def hydrated_product_matrix(product_vectors: np.ndarray, quality: np.ndarray, scale: float,
                            mips_augment: bool, radius_sq: float | None = None) -> np.ndarray:
    """The vectors the index holds: [v ; scale*f], plus sqrt(R^2 - |x|^2) with the MIPS augmentation.

    product_vectors (n, D) float32, quality (n, F) float32 -> (n, D + F [+ 1]) float32. The
    augmentation gives every row the norm R = max row norm, so inner-product search over them is a
    cosine search (what HNSW graphs are built for) while the inner product with [q ; w ; 0] is unchanged.
    radius_sq: R^2 of an existing index (`mips_radius_sq`), for rows added to it later (a row longer
    than R gets 0); None = the max over these rows. The live catalogue hydrates new products with it.
    """
    from upper_fast.kernels import hydrate_products

    hydrated = hydrate_products(product_vectors, quality, scale, num_threads=0)
    if not mips_augment:
        return hydrated
    sq = np.einsum("ij,ij->i", hydrated, hydrated, dtype=np.float64)
    extra = np.sqrt(np.maximum((sq.max() if radius_sq is None else radius_sq) - sq, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([hydrated, extra[:, None]], axis=1))


def mips_radius_sq(product_vectors: np.ndarray, quality: np.ndarray, scale: float) -> float:
    """R^2 = the largest squared norm of a hydrated row [v ; scale*f] (what `hydrated_product_matrix`
    augments every row up to), read in blocks so a memory-mapped matrix is not copied whole."""
    from upper_fast.kernels import hydrate_products

    best = 0.0
    for lo in range(0, product_vectors.shape[0], 65536):
        block = hydrate_products(np.ascontiguousarray(product_vectors[lo:lo + 65536], dtype=np.float32),
                                 np.ascontiguousarray(quality[lo:lo + 65536], dtype=np.float32), scale, num_threads=0)
        best = max(best, float(np.einsum("ij,ij->i", block, block, dtype=np.float64).max(initial=0.0)))
    return best


def hydrated_ann_recall(index: Any, hydrated: np.ndarray, queries: np.ndarray, weights: np.ndarray, ef: int,
                        mips_augment: bool, k: int = 100, rerank: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Recall@k of the ANN index against exact scoring of the same hydrated vectors.

    queries (m, D) float32 raw query vectors; weights (F,) float32. The exact side uses
    upper_fast.topk_inner_product over the hydrated matrix (n, D+F[+1]).
    rerank: (product_vectors (n, D) f32, boost (n,) f32) to measure what the Retriever serves from a
    bf16/i8 index: RERANK_FACTOR_PCT% of k candidates re-ranked exactly (`rerank_exact`).
    """
    from upper_fast.kernels import hydrate_queries, rerank_exact, topk_inner_product

    tail = np.concatenate([weights, np.zeros(1, np.float32)]) if mips_augment else weights
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    hq = hydrate_queries(queries, np.ascontiguousarray(tail, dtype=np.float32))
    k = min(k, hydrated.shape[0])
    exact = topk_inner_product(hq, hydrated, k)
    if rerank is None:
        approx_ids = index.search(hq, k, ef=max(ef, k), num_threads=0).ids
    else:
        kc = rerank_candidates(k, hydrated.shape[0])
        candidates = index.search(hq, kc, ef=max(ef, kc), num_threads=0).ids
        approx_ids = rerank_exact(queries, rerank[0], rerank[1], candidates, k).ids
    hits = sum(len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) for a, e in zip(approx_ids, exact.ids))
    return hits / float(exact.counts.sum())


def add_lexical_channel(bundle_dir: str | os.PathLike[str], texts: Sequence[str], stem: bool = True,
                        fusion: Any = None) -> dict[str, Any]:
    """Add the lexical channel (a tantivy BM25 index over `texts`, one per product row, and its fusion:
    `fusion` an `upper_fast.lexical.FusionModel`, default RRF) to a bundle directory in place,
    rewriting its manifest; returns the manifest. For a bundle no Retriever is serving (export writes
    the channel itself with `lexical=True`)."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    if LEXICAL_FILES[0] in manifest["files"]:
        raise FileExistsError(f"{root} already has a lexical channel")
    return _write_lexical(root, manifest, texts, stem, fusion, int(manifest["dims"]["n_products"]))


def _write_lexical(staged: Path, manifest: dict[str, Any], texts: Sequence[str], stem: bool, fusion: Any,
                   n: int) -> dict[str, Any]:
    """Build the lexical channel into a staged bundle, store (or fit, then store) its fusion and
    rewrite the manifest with their checksums and a "lexical" / "fusion" summary."""
    from upper_fast.lexical import FusionModel, build_lexical_index

    if len(texts) != n:
        raise ValueError(f"lexical_texts has {len(texts)} entries for {n} products")
    meta = build_lexical_index(texts, staged, stem=stem)
    model = fusion if isinstance(fusion, FusionModel) else FusionModel()
    model.save(staged)
    keep = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "package_version",
                                                            "model_version", "created_unix", "dims", "dtypes", "files")}

    def rewrite(model: Any) -> dict[str, Any]:
        keep["lexical"] = {"engine": meta["engine"], "engine_version": meta["engine_version"],
                           "fields": meta["fields"], "stemmer": meta["analyzer"]["stemmer"]}
        keep["fusion"] = {"method": model.method, "lexical_k": model.lexical_k}
        return write_manifest(staged, model_version=manifest["model_version"], dims=manifest["dims"],
                              dtypes=manifest["dtypes"], extra=keep)

    manifest = rewrite(model)
    if callable(fusion) and not isinstance(fusion, FusionModel):
        model = fusion(staged)
        if not isinstance(model, FusionModel):
            raise TypeError(f"the fusion callable must return a FusionModel, got {type(model).__name__}")
        model.save(staged)
        manifest = rewrite(model)
    return manifest


def write_bundle(bundle_dir: str | os.PathLike[str], *, query_tower_onnx: str | os.PathLike[str],
                 split_towers_onnx: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
                 product_tower: dict[str, str | os.PathLike[str]] | None = None,
                 featurizer_config: dict[str, int], query_keys: Sequence[str], query_graph: np.ndarray,
                 product_ids: Sequence[str], product_graph: np.ndarray, product_vectors: np.ndarray,
                 quality: np.ndarray, hydration: dict[str, Any], thresholds: dict[str, float],
                 users: Any, countries: Sequence[str], hist_items: int, hist_queries: int,
                 model_version: str, index_dtype: str = "f32", index_M: int = 16,
                 index_ef_construction: int = 200, ef_search: int = 128, seed: int = 0,
                 extra: dict[str, Any] | None = None, overwrite: bool = False,
                 recall_queries: np.ndarray | None = None, target_recall: float | None = None,
                 max_ef: int = 2048, display: Any = None, lexical_texts: Sequence[str] | None = None,
                 lexical_stem: bool = True, fusion: Any = None) -> dict[str, Any]:
    """Write a complete bundle atomically (temp dir beside `bundle_dir`, then one rename).

    split_towers_onnx: optional (user_tower.onnx, query_part.onnx) paths (`export_split_towers`).
    product_tower: optional {"onnx", "tokenizer", "features"} paths of product_tower.onnx,
    tokenizer.json and product_features.json (`upper_fast_train.export.export_product_files`).
    query_graph (nq, G) f32; product_graph (n, G) f32; product_vectors (n, D) f32 L2-normalised;
    quality (n, F) f32 in [0, 1]; hydration: {"weights": [F floats], "scale": float,
    "mips_augmented": bool, ...report}; thresholds: {"negative", "click", "favorite", "add_to_cart",
    "purchase"} raw-cosine thresholds; users: pyarrow Table with user_id (string), country (int32,
    0 = unknown), hist_rows (list<int32>, product rows oldest first), hist_types (list<int8>),
    hist_queries (list<string>). Builds the index with upper_fast.Index over the hydrated vectors.
    recall_queries: optional (m, D) float32 query vectors; the ANN recall@100 at ef_search against
    exact hydrated scoring over them is measured and stored in manifest["index"]["recall_at_100"]
    (for bf16/i8: as the Retriever serves it, with its float32 re-rank; "recall_mode" says which).
    target_recall (with recall_queries): while the recall is below it, ef_search is raised 1.5x at a
    time up to max_ef (hydrated inner products are not cosines, and a fixed ef can fall short on a
    large catalogue); every (ef, recall) tried is kept in manifest["index"]["ef_tuning"].
    display: optional pyarrow Table of what a person reads beside a hit (product_id, title, and
    category / price where the catalogue has them), stored as display.parquet for `upper-fast search`;
    the Retriever never reads it.
    lexical_texts: optional catalogue text per product row (`upper_fast.lexical.catalogue_texts`): builds
    the lexical channel (lexical.json, lexical/, fusion.json; `lexical_stem`: the English stemmer, default on).
    fusion: the channels' fusion (`upper_fast.lexical.FusionModel`, default RRF), or a callable
    staged_dir -> FusionModel run on the complete staged bundle (it may load it with
    `Retriever.load(staged_dir, verify=False)`) to fit the fusion before the bundle is committed.
    Returns the manifest.
    """
    import pyarrow.parquet as pq

    from upper_fast.featurizer import FeaturizerConfig
    from upper_fast.index import Index

    n = len(product_ids)
    arrays = {"query_graph": query_graph, "product_graph": product_graph, "product_vectors": product_vectors,
              "quality": quality}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 2:
            raise TypeError(f"{name} must be a 2-d float32 numpy array")
    if product_graph.shape[0] != n or product_vectors.shape[0] != n or quality.shape[0] != n:
        raise ValueError(f"product arrays must have {n} rows (one per product id)")
    if query_graph.shape[0] != len(query_keys) or query_graph.shape[1] != product_graph.shape[1]:
        raise ValueError("query_graph must be (len(query_keys), G) with the product graph's G")
    weights = hydration["weights"]
    if len(weights) != quality.shape[1]:
        raise ValueError(f"hydration weights have {len(weights)} entries for {quality.shape[1]} quality features")
    missing = [t for t in ("negative", "click", "favorite", "add_to_cart", "purchase") if t not in thresholds]
    if missing:
        raise ValueError(f"thresholds lack {missing}")
    for name, keys in (("query_keys", query_keys), ("product_ids", product_ids)):
        if any(("\n" in k or "\r" in k) for k in keys):
            raise ValueError(f"{name} must not contain line breaks (one key per line in the bundle)")

    staged = staging_dir(bundle_dir)
    try:
        shutil.copyfile(query_tower_onnx, staged / "query_tower.onnx")
        if split_towers_onnx is not None:
            for src, name in zip(split_towers_onnx, SPLIT_TOWER_FILES, strict=True):
                shutil.copyfile(src, staged / name)
        if product_tower is not None:
            for key, name in zip(("onnx", "tokenizer", "features"), PRODUCT_TOWER_FILES, strict=True):
                shutil.copyfile(product_tower[key], staged / name)
        fz = FeaturizerConfig.from_dict(dict(featurizer_config)).to_dict()
        (staged / "featurizer.json").write_text(json.dumps(fz, indent=2, sort_keys=True) + "\n")
        (staged / "query_nodes.txt").write_text("".join(k + "\n" for k in query_keys), encoding="utf-8")
        (staged / "product_ids.txt").write_text("".join(str(p) + "\n" for p in product_ids), encoding="utf-8")
        for name, a in arrays.items():
            np.save(staged / f"{name}.npy", np.ascontiguousarray(a))
        (staged / "hydration.json").write_text(json.dumps(hydration, indent=2, sort_keys=True) + "\n")
        (staged / "thresholds.json").write_text(json.dumps({k: float(v) for k, v in thresholds.items()}, indent=2) + "\n")
        pq.write_table(users, staged / "users.parquet")
        if display is not None:
            pq.write_table(display, staged / DISPLAY_FILE)
        (staged / "countries.json").write_text(json.dumps(list(countries)) + "\n")

        w = np.asarray(weights, dtype=np.float32)
        hydrated = hydrated_product_matrix(product_vectors, quality, float(hydration["scale"]),
                                           bool(hydration.get("mips_augmented", False)))
        index = Index(hydrated.shape[1], dtype=index_dtype, M=index_M, ef_construction=index_ef_construction, seed=seed)
        index.add(np.arange(n, dtype=np.int64), hydrated, num_threads=0)
        recall = None
        tuning: list[list[float]] = []
        ef_search = int(ef_search)
        if recall_queries is not None:
            mips = bool(hydration.get("mips_augmented", False))
            # bf16/i8: the recall the Retriever serves (its default exact re-rank), not the index's own.
            served = None if index_dtype == "f32" else (product_vectors, (float(hydration["scale"]) * (quality @ w)).astype(np.float32))
            recall = hydrated_ann_recall(index, hydrated, recall_queries, w, ef_search, mips, rerank=served)
            tuning.append([ef_search, recall])
            while target_recall is not None and recall < target_recall and ef_search < max_ef:
                ef_search = min(max_ef, int(ef_search * 1.5))
                recall = hydrated_ann_recall(index, hydrated, recall_queries, w, ef_search, mips, rerank=served)
                tuning.append([ef_search, recall])
        index.ef = ef_search
        index.save(str(staged / "index.upf"))
        dims = {"query_dim": int(product_vectors.shape[1]), "graph_dim": int(product_graph.shape[1]),
                "quality_features": int(w.shape[0]), "index_dim": int(hydrated.shape[1]),
                "n_products": n, "n_query_nodes": len(query_keys), "n_users": int(users.num_rows),
                "hist_items": int(hist_items), "hist_queries": int(hist_queries),
                "query_terms": int(featurizer_config["max_query_terms"])}
        dtypes = {"product_vectors": "float32", "product_graph": "float32", "query_graph": "float32",
                  "quality": "float32", "index": index_dtype, "onnx_inputs": "int64 ids, float32 features"}
        more = {"index": {"dtype": index_dtype, "M": index_M, "ef_construction": index_ef_construction,
                          "ef_search": int(ef_search), "seed": seed, "recall_at_100": recall,
                          "recall_mode": "index" if index_dtype == "f32" else "float32 re-rank (Retriever default)",
                          "ef_tuning": tuning}}
        more.update(extra or {})
        manifest = write_manifest(staged, model_version=model_version, dims=dims, dtypes=dtypes, extra=more)
        if lexical_texts is not None:
            manifest = _write_lexical(staged, manifest, lexical_texts, lexical_stem, fusion, n)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    commit_staged(staged, bundle_dir, overwrite=overwrite)
    return manifest
