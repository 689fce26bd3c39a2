import importlib.util
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from upper_fast import Retriever
from serve_tiny import tiny_bundle

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_service.py"


def load_example():
    spec = importlib.util.spec_from_file_location("fastapi_service", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the request models' annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc")
    a, _, _ = tiny_bundle(tmp, "a", seed=0)
    b, _, _ = tiny_bundle(tmp, "b", seed=1)
    app = load_example().create_app(str(a))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 30 s"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", a, b
    server.should_exit = True
    thread.join(timeout=10)


def test_concurrent_requests_match_direct_search(service):
    url, a, _ = service
    direct = Retriever.load(a)
    cases = [("red mug", None), ("oak chair", "u3"), ("gift", "u5"), ("unseen words here", "nobody")] * 16

    def call(case):
        q, u = case
        params = {"q": q, "k": 20} | ({"user": u} if u else {})
        return client.get(f"{url}/search", params=params)

    t0 = time.monotonic()
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, cases))
    assert time.monotonic() - t0 < 30
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:1]
    for (q, u), r in zip(cases, responses):
        expect = direct.search(q, user=u, k=20)
        body = r.json()
        assert [h["product_id"] for h in body["hits"]] == expect.product_ids
        assert body["count"] == expect.count and body["model_version"] == "tiny-0"


def test_post_context_filter_and_errors(service):
    url, _, _ = service
    with httpx.Client(timeout=10) as client:
        r = client.post(f"{url}/search", json={"query": "wool", "k": 5, "country": "FR",
                                               "recent_products": [{"product_id": "P00003", "interaction": "purchase"}],
                                               "allowed_product_ids": ["P00001", "P00002", "P00003"]})
        assert r.status_code == 200
        assert {h["product_id"] for h in r.json()["hits"]} <= {"P00001", "P00002", "P00003"}
        bad = client.post(f"{url}/search", json={"query": "wool", "recent_products": [{"product_id": "P00003", "interaction": "like"}]})
        assert bad.status_code == 422 and "interaction" in bad.text
        assert client.get(f"{url}/search", params={"q": "wool", "k": 0}).status_code == 422
        assert client.get(f"{url}/healthz").json()["products"] == 300


def test_swap_endpoint(service):
    url, a, b = service
    with httpx.Client(timeout=30) as client:
        assert client.post(f"{url}/admin/swap", json={"bundle": str(b)}).json()["model_version"] == "tiny-1"
        assert client.get(f"{url}/search", params={"q": "oak"}).json()["model_version"] == "tiny-1"
        assert client.post(f"{url}/admin/swap", json={"bundle": str(b) + "-missing"}).status_code == 400
        assert client.post(f"{url}/admin/swap", json={"bundle": str(a)}).json()["model_version"] == "tiny-0"
