"""Milvus as the Retriever's vector store: a bundle's hydrated product vectors in a Milvus collection.

    push_to_milvus("bundle/", "http://milvus:19530")          # or a Milvus Lite file: "/data/products.db"
    retriever = Retriever.load("bundle/", backend=MilvusBackend("http://milvus:19530"))

`push_to_milvus` writes what the in-process index holds: row i of the collection is bundle row i, its
vector the hydrated product vector [v ; scale*f (; sqrt(R^2 - |x|^2))] of
`upper_fast.bundle.hydrated_product_matrix`, so the inner product with the hydrated query
[q ; w (; 0)] is the same score (cosine + boost) the in-process index ranks by. Beside it: product_id,
boost (scale * <w, f>, so cosine = score - boost) and the filterable fields (category and price from
the bundle's display.parquet, plus any scalar columns given, e.g. shop_country or in_stock). Metric IP,
index HNSW (M and efConstruction of the bundle's own index).

`MilvusBackend` plugs the collection into `Retriever.load(..., backend=...)`: the query tower runs in
process, the ANN step is a Milvus search, then the Retriever prunes and assigns tiers exactly as it
does with its own index. Live upserts and removals of the Retriever go to the collection.

Optional: needs pymilvus (and milvus-lite for a local file URI), `pip install 'upper_fast[scale]'`;
`import upper_fast` never imports this module.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MilvusBackend", "collection_name", "push_to_milvus"]

MILVUS_INSTALL = "pip install 'upper_fast[scale]' (pymilvus, and milvus-lite for a local file URI)"
# Columns every collection has; extra filterable fields may not reuse these names.
RESERVED_FIELDS = ("row", "product_id", "vector", "boost")
# The collection property that says which bundle's vectors a collection holds.
PROPERTY = "upper_fast.bundle"
_INSERT_ROWS = 2000  # rows per insert call (well under Milvus's 64 MB gRPC message limit at dim 1024)


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as exc:
        raise ImportError(f"the Milvus backend needs pymilvus: {MILVUS_INSTALL} ({exc})") from exc
    return pymilvus


def collection_name(model_version: str) -> str:
    """The default collection of a bundle: "upper_fast_" + its model version with every character
    Milvus does not allow in a name (letters, digits, underscore) replaced by "_"."""
    return ("upper_fast_" + re.sub(r"[^0-9A-Za-z_]", "_", model_version))[:255]


def _connect(uri: str, token: str, timeout_s: float) -> Any:
    """A MilvusClient, or ConnectionError naming the fix when nothing answers at uri."""
    pymilvus = _pymilvus()
    if not isinstance(uri, str) or not uri:
        raise TypeError(f"uri must be a non-empty str (http://HOST:19530 or a Milvus Lite file ending in .db), got {uri!r}")
    try:
        client = pymilvus.MilvusClient(uri=uri, token=token, timeout=timeout_s)
        client.list_collections(timeout=timeout_s)
    except pymilvus.exceptions.MilvusException as exc:
        lite = "" if uri.endswith(".db") else " or a Milvus Lite file (a path ending in .db, whose folder exists)"
        raise ConnectionError(f"Milvus at {uri} does not answer ({exc.message if hasattr(exc, 'message') else exc}): "
                              f"start Milvus there, check the URI and token, or pass http://HOST:19530{lite}") from None
    return client


def _bundle_arrays(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Product ids, hydrated vectors (n, index_dim) f32 and boost (n,) f32 of a bundle, as its index
    and the Retriever compute them."""
    from upper_fast.bundle import Bundle

    b = Bundle(bundle, manifest)
    return {"product_ids": b.product_ids(), "hydrated": b.hydrated_products(), "boost": b.hydration().boost(b.quality())}


def _field_columns(bundle: Path, product_ids: list[str], fields: Any) -> dict[str, tuple[str, list[Any]]]:
    """Filterable scalar fields per bundle row: name -> (kind, values), kind in varchar/double/int64/bool.

    From display.parquet (category, price) when the bundle has one, then from `fields` (a pyarrow
    Table with product_id and scalar columns), which must give a value for every bundle product."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    if (bundle / "display.parquet").is_file():
        display = pq.read_table(bundle / "display.parquet")
        tables.append(("display.parquet", display.select([c for c in ("product_id", "category", "price")
                                                           if c in display.column_names])))
    if fields is not None:
        if isinstance(fields, Sequence) and not isinstance(fields, (str, bytes)):
            fields = pa.Table.from_pylist(list(fields))
        if not isinstance(fields, pa.Table) or "product_id" not in fields.column_names:
            raise TypeError("fields must be a pyarrow Table (or a list of dicts) with a product_id column and the "
                            "scalar columns to filter on")
        tables.append(("fields", fields))
    rows = {p: i for i, p in enumerate(product_ids)}
    out: dict[str, tuple[str, list[Any]]] = {}
    for source, table in tables:
        ids = [str(p) for p in table.column("product_id").to_pylist()]
        at = [rows.get(p, -1) for p in ids]
        missing = len(product_ids) - len({r for r in at if r >= 0})
        if missing:
            first = next(p for p in product_ids if p not in set(ids))
            raise ValueError(f"{source} has no row for {missing} bundle products (first: {first!r}): give every "
                             "product a value, or leave that column out")
        for name in table.column_names:
            if name == "product_id":
                continue
            if name in RESERVED_FIELDS or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
                raise ValueError(f"{source} column {name!r} cannot be a Milvus field: use a name of letters, digits "
                                 f"and _ other than {list(RESERVED_FIELDS)}")
            col = table.column(name)
            t = col.type
            kind = ("bool" if pa.types.is_boolean(t) else "int64" if pa.types.is_integer(t) else
                    "double" if pa.types.is_floating(t) else
                    "varchar" if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t) else None)
            if kind is None:
                raise ValueError(f"{source} column {name!r} has type {t}; filterable fields are strings, integers, "
                                 "floats or booleans")
            values: list[Any] = [None] * len(product_ids)
            for r, v in zip(at, col.to_pylist()):
                if r >= 0:
                    values[r] = v
            out[name] = (kind, values)
    return out


def _schema(pymilvus: Any, dim: int, fields: dict[str, tuple[str, list[Any]]]) -> Any:
    DataType = pymilvus.DataType
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("product_id", DataType.VARCHAR, max_length=1024)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("boost", DataType.FLOAT)
    kinds = {"varchar": DataType.VARCHAR, "double": DataType.DOUBLE, "int64": DataType.INT64, "bool": DataType.BOOL}
    for name, (kind, values) in fields.items():
        extra = {}
        if kind == "varchar":
            extra["max_length"] = max(1, max((len(str(v).encode()) for v in values if v is not None), default=1))
            extra["max_length"] = min(65535, max(256, extra["max_length"]))
        # nullable: products upserted later without a value for this field
        schema.add_field(name, kinds[kind], nullable=True, **extra)
    return schema


def push_to_milvus(bundle: str | os.PathLike[str], uri: str, collection: str | None = None, *,
                   fields: Any = None, token: str = "", overwrite: bool = False, index_type: str = "HNSW",
                   timeout_s: float = 30.0) -> dict[str, Any]:
    """Write a bundle's hydrated product vectors and filterable fields into a Milvus collection.

    uri: a Milvus server ("http://HOST:19530") or a Milvus Lite file ("/path/products.db").
    collection: default `collection_name(model_version)`. fields: optional pyarrow Table (or list of
    dicts) with product_id and scalar columns to filter on (shop_country, in_stock, ...), one row per
    bundle product. overwrite: replace an existing collection of that name (else FileExistsError).
    index_type: "HNSW" (M and efConstruction of the bundle's index) or "FLAT" (exact).
    The collection is built under a temporary name and renamed into place when complete, so a failed
    push leaves any previous collection as it was. Returns a summary (collection, rows, dim, index,
    fields, seconds).
    """
    import time

    from upper_fast.bundle import verify_bundle

    t0 = time.perf_counter()
    path = Path(bundle)
    manifest = verify_bundle(path)
    if index_type not in ("HNSW", "FLAT"):
        raise ValueError(f"index_type must be 'HNSW' or 'FLAT', got {index_type!r}")
    arrays = _bundle_arrays(path, manifest)
    extra = _field_columns(path, arrays["product_ids"], fields)
    name = collection or collection_name(str(manifest["model_version"]))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
        raise ValueError(f"collection {name!r} is not a Milvus collection name (letters, digits and _, not "
                         "starting with a digit)")
    pymilvus = _pymilvus()
    client = _connect(uri, token, timeout_s)
    if client.has_collection(name) and not overwrite:
        raise FileExistsError(f"Milvus at {uri} already has a collection {name!r}: pass overwrite=True "
                              "(--overwrite) to replace it, or another collection name")
    n, dim = arrays["hydrated"].shape
    idx = manifest.get("index", {})
    meta = {"upper_fast_model_version": str(manifest["model_version"]), "n_products": n, "index_dim": dim,
            "mips_augmented": bool(json.loads((path / "hydration.json").read_text()).get("mips_augmented", False))}
    staging = f"{name[:230]}__staging"
    if client.has_collection(staging):
        client.drop_collection(staging)
    client.create_collection(staging, schema=_schema(pymilvus, dim, extra))
    try:
        # Which bundle the vectors belong to, checked by MilvusBackend.bind (collection properties:
        # Milvus Lite keeps no schema description).
        client.alter_collection_properties(staging, properties={PROPERTY: json.dumps(meta, sort_keys=True)})
        ids, hydrated, boost = arrays["product_ids"], arrays["hydrated"], arrays["boost"]
        for lo in range(0, n, _INSERT_ROWS):
            hi = min(n, lo + _INSERT_ROWS)
            client.insert(staging, [
                {"row": r, "product_id": ids[r], "vector": hydrated[r], "boost": float(boost[r]),
                 **{f: values[r] for f, (_, values) in extra.items()}} for r in range(lo, hi)])
        client.flush(staging)  # sealed segments get the vector index (growing data is searched exactly)
        params = client.prepare_index_params()
        build = {"M": int(idx.get("M", 16)), "efConstruction": int(idx.get("ef_construction", 200))}
        params.add_index(field_name="vector", index_type=index_type, metric_type="IP",
                         params=build if index_type == "HNSW" else {})
        client.create_index(staging, params)
        if client.has_collection(name):
            client.drop_collection(name)
        client.rename_collection(staging, name)
    except BaseException:
        if client.has_collection(staging):
            client.drop_collection(staging)
        raise
    client.load_collection(name)
    count = _count(client, name)
    if count != n:
        raise RuntimeError(f"Milvus collection {name!r} holds {count} rows after the push, expected {n}")
    return {"collection": name, "uri": uri, "rows": n, "dim": dim, "metric": "IP",
            "index": {"type": index_type, **(build if index_type == "HNSW" else {})},
            "fields": {f: kind for f, (kind, _) in extra.items()}, "model_version": meta["upper_fast_model_version"],
            "seconds": time.perf_counter() - t0}


def _count(client: Any, name: str) -> int:
    res = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(res[0]["count(*)"])


class MilvusBackend:
    """A Milvus collection as the vector store of a `Retriever` (`Retriever.load(..., backend=...)`).

    uri, token: the Milvus server or Milvus Lite file. collection: default the bundle's
    `collection_name`. ef: HNSW ef at search time (default: the bundle's ef_search, at least k).
    Nothing connects until the Retriever loads: then a URI that does not answer raises ConnectionError,
    and a collection that is missing or holds another bundle's vectors raises ValueError, each naming
    the fix, before the Retriever exists.
    """

    def __init__(self, uri: str, collection: str | None = None, *, token: str = "", ef: int | None = None,
                 timeout_s: float = 10.0) -> None:
        if not isinstance(uri, str) or not uri:
            raise TypeError(f"uri must be a non-empty str, got {uri!r}")
        if ef is not None and (not isinstance(ef, int) or ef < 1):
            raise ValueError(f"ef must be an int >= 1, got {ef!r}")
        self.uri, self.collection, self.token, self.ef, self.timeout_s = uri, collection, token, ef, timeout_s
        self._client: Any = None
        self._fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"MilvusBackend({self.uri!r}, collection={self.collection!r})"

    def bind(self, bundle: Path, manifest: dict[str, Any], n_products: int) -> MilvusBackend:
        """A backend connected to the collection of this bundle (checked: it exists, holds this bundle's
        model version, row count and vector width). Called by `Retriever.load` and `swap`."""
        model_version = str(manifest["model_version"])
        name = self.collection or collection_name(model_version)
        client = _connect(self.uri, self.token, self.timeout_s)
        push = f"push the bundle first: upper-fast push-milvus {bundle} {self.uri}" + (
            f" --collection {name}" if self.collection else "")
        if not client.has_collection(name):
            raise ValueError(f"Milvus at {self.uri} has no collection {name!r}: {push}")
        info = client.describe_collection(name)
        try:
            meta = json.loads((info.get("properties") or {}).get(PROPERTY) or "{}")
        except json.JSONDecodeError:
            meta = {}
        dim = next((f.get("params", {}).get("dim") for f in info.get("fields", []) if f.get("name") == "vector"), None)
        if meta.get("upper_fast_model_version") != model_version:
            raise ValueError(f"Milvus collection {name!r} holds vectors of model "
                             f"{meta.get('upper_fast_model_version')!r}, the bundle is {model_version!r}: {push} "
                             "(with --overwrite)")
        if int(dim or 0) != int(manifest["dims"]["index_dim"]):
            raise ValueError(f"Milvus collection {name!r} has vectors of width {dim}, the bundle's index has "
                             f"{manifest['dims']['index_dim']}: {push} (with --overwrite)")
        client.load_collection(name)
        count = _count(client, name)
        if count < n_products:
            raise ValueError(f"Milvus collection {name!r} holds {count} rows for the bundle's {n_products} products "
                             f"(an interrupted push?): {push} (with --overwrite)")
        bound = MilvusBackend(self.uri, name, token=self.token, ef=self.ef, timeout_s=self.timeout_s)
        bound._client = client
        bound._fields = tuple(f["name"] for f in info.get("fields", []) if f.get("name") not in RESERVED_FIELDS)
        return bound

    @property
    def fields(self) -> tuple[str, ...]:
        """The collection's filterable fields besides row, product_id, vector and boost (after bind)."""
        return self._fields

    def _bound(self) -> Any:
        if self._client is None:
            if self.collection is None:
                raise ValueError("this MilvusBackend is not bound to a collection: pass collection=..., or use the "
                                 "one Retriever.load(..., backend=...) binds")
            self._client = _connect(self.uri, self.token, self.timeout_s)
        return self._client

    @property
    def client(self) -> Any:
        """The pymilvus `MilvusClient` of the bound collection (after `Retriever.load`), for queries of
        your own; ValueError before a Retriever bound this backend."""
        return self._bound()

    def search(self, hydrated: np.ndarray, k: int, allowed: np.ndarray | str | None = None, ef: int = 128,
               n_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product for each hydrated query (m, index_dim) float32: (ids (m, k) int64,
        -1 padded; scores (m, k) float32, best first). allowed: None, int64 bundle rows, or a Milvus
        boolean expression over the collection's fields (e.g. "category == 'jewelry' and price < 50").
        n_rows: rows at or past it (products another client added) are left out."""
        client = self._bound()
        expr = ""
        if isinstance(allowed, str):
            expr = allowed
        elif allowed is not None:
            expr = f"row in [{','.join(map(str, np.asarray(allowed, np.int64).tolist()))}]"
        m = hydrated.shape[0]
        ids = np.full((m, k), -1, np.int64)
        scores = np.full((m, k), -np.inf, np.float32)
        try:
            # output_fields: the primary key alone (Milvus Lite returns every field for an empty list)
            res = client.search(self.collection, data=list(hydrated), limit=k, filter=expr, anns_field="vector",
                                output_fields=["row"], consistency_level=self._consistency(),
                                search_params={"metric_type": "IP", "params": {"ef": max(self.ef or ef, k)}})
        except _pymilvus().exceptions.MilvusException as exc:
            if isinstance(allowed, str):
                raise ValueError(f"Milvus rejected the filter expression {allowed!r}: {exc} (fields: "
                                 f"{', '.join(self._fields) or 'none besides row and product_id'})") from None
            raise
        for i, hits in enumerate(res):
            got = [(int(h.id), float(h.distance)) for h in hits if n_rows is None or int(h.id) < n_rows][:k]
            if got:
                ids[i, : len(got)] = [g[0] for g in got]
                scores[i, : len(got)] = [g[1] for g in got]
        return ids, scores

    def upsert(self, rows: np.ndarray, vectors: np.ndarray, fields: Mapping[str, Sequence[Any]]) -> None:
        """Add or replace rows (k,) int64 with hydrated vectors (k, index_dim) float32 and their fields:
        product_id and boost required, filterable fields optional (null when absent)."""
        rows = np.asarray(rows, np.int64)
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != rows.shape[0]:
            raise ValueError(f"vectors must be (k, index_dim) for k = {rows.shape[0]} rows, got {vectors.shape}")
        missing = [f for f in ("product_id", "boost") if f not in fields]
        if missing:
            raise ValueError(f"fields lack {missing} (every row of the collection carries them)")
        for name, values in fields.items():
            if len(values) != rows.shape[0]:
                raise ValueError(f"fields[{name!r}] has {len(values)} values for {rows.shape[0]} rows")
        client = self._bound()
        data = []
        for j, r in enumerate(rows.tolist()):
            item = {"row": r, "vector": vectors[j], "product_id": str(fields["product_id"][j]),
                    "boost": float(fields["boost"][j])}
            item.update({f: v[j] for f, v in fields.items() if f not in item})
            data.append(item)
        client.upsert(self.collection, data)

    def remove(self, rows: np.ndarray) -> None:
        """Delete rows (k,) int64 from the collection (searches of this client no longer return them)."""
        rows = np.asarray(rows, np.int64)
        if rows.size:
            self._bound().delete(self.collection, ids=rows.tolist())

    def _consistency(self) -> str:
        """Session on a server: this client's own upserts and removals are visible to its next search.
        Milvus Lite is strongly consistent and has no timestamp service for Session."""
        return "Strong" if self.uri.endswith(".db") else "Session"

    def count(self) -> int:
        """Rows in the collection."""
        return _count(self._bound(), self.collection)
