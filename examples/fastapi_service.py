"""A search service embedding upper_fast.Retriever in FastAPI, the way a team would run it.

    UPPER_FAST_BUNDLE=path/to/bundle uvicorn examples.fastapi_service:app --workers 2

One Retriever per process, loaded once at start-up; endpoints are plain `def`, so FastAPI runs them in
its thread pool and the Retriever (thread-safe, 1 thread per call) serves them concurrently.
POST /admin/swap loads a new bundle and switches to it without dropping in-flight searches.
A bundle with a lexical index answers with hybrid results (each hit lists its "channels"); the
request's `lexical` / `lexical_k` choose the channels, as in `Retriever.search`.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from upper_fast import FormatError, Retriever, UserContext


class RecentProduct(BaseModel):
    product_id: str
    interaction: str = Field("click", description="click, favorite, add_to_cart or purchase")


class SearchRequest(BaseModel):
    query: str
    user_id: str | None = None
    recent_products: list[RecentProduct] = []
    recent_queries: list[str] = []
    country: str | None = None
    k: int = Field(100, ge=1, le=10_000)
    min_tier: int = Field(0, ge=0, le=4)
    allowed_product_ids: list[str] | None = None
    lexical: bool | None = Field(None, description="None: hybrid when the bundle has a lexical index; "
                                 "False: dense only; True: hybrid (422 for a bundle without one)")
    lexical_k: int | None = Field(None, ge=1, le=10_000)


class SwapRequest(BaseModel):
    bundle: str


def create_app(bundle: str | None = None, num_threads: int = 1) -> FastAPI:
    """The app; `bundle` defaults to $UPPER_FAST_BUNDLE."""
    state: dict[str, Retriever] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        path = bundle or os.environ.get("UPPER_FAST_BUNDLE")
        if not path:
            raise RuntimeError("set UPPER_FAST_BUNDLE to a bundle directory (from `upper-fast export`)")
        state["retriever"] = Retriever.load(path, num_threads=num_threads)
        yield
        state.clear()

    app = FastAPI(title="product search (upper_fast)", lifespan=lifespan)

    def retriever() -> Retriever:
        if "retriever" not in state:
            raise HTTPException(503, "retriever not loaded")
        return state["retriever"]

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        r = retriever()
        return {"status": "ok", "model_version": r.manifest["model_version"], "products": r.num_products}

    @app.get("/search")
    def search_get(q: str, user: str | None = None, k: int = 100, lexical: bool | None = None) -> dict[str, Any]:
        if not 1 <= k <= 10_000:
            raise HTTPException(422, "k must be in 1..10000")
        try:
            return retriever().search(q, user=user, k=k, lexical=lexical).to_dict()
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/search")
    def search_post(req: SearchRequest) -> dict[str, Any]:
        user: Any = req.user_id
        if req.recent_products or req.recent_queries or req.country:
            ctx = UserContext(recent_products=[(p.product_id, p.interaction) for p in req.recent_products],
                              recent_queries=req.recent_queries, country=req.country)
            user = (req.user_id, ctx) if req.user_id else ctx
        try:
            res = retriever().search(req.query, user=user, k=req.k, min_tier=req.min_tier,
                                     filter=req.allowed_product_ids, lexical=req.lexical, lexical_k=req.lexical_k)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return res.to_dict()

    @app.post("/admin/swap")
    def swap(req: SwapRequest) -> dict[str, Any]:
        try:
            manifest = retriever().swap(req.bundle)
        except (FileNotFoundError, FormatError) as exc:
            raise HTTPException(400, f"bundle not swapped: {exc}") from None
        return {"model_version": manifest["model_version"]}

    return app


app = create_app() if os.environ.get("UPPER_FAST_BUNDLE") else None
