import threading
import time

import pytest

from upper_fast import Retriever
from serve_tiny import tiny_bundle


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swap")
    a, _, _ = tiny_bundle(tmp, "a", seed=0)
    b, _, _ = tiny_bundle(tmp, "b", seed=1)
    return a, b


def test_threads_search_during_swaps(two_bundles):
    a, b = two_bundles
    retriever = Retriever.load(a)
    expected = {"tiny-0": Retriever.load(a).search("red mug", k=20).rows.tolist(),
                "tiny-1": Retriever.load(b).search("red mug", k=20).rows.tolist()}
    assert expected["tiny-0"] != expected["tiny-1"]
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def worker() -> None:
        try:
            while not stop.is_set():
                res = retriever.search("red mug", k=20)
                # One consistent bundle per search: rows match that bundle's own answer.
                assert res.rows.tolist() == expected[res.model_version]
                seen.add(res.model_version)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    swaps = 0
    while swaps < 4 and time.monotonic() < deadline:
        retriever.swap(b if swaps % 2 == 0 else a)
        swaps += 1
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors[0]
    assert swaps == 4 and seen == {"tiny-0", "tiny-1"}
    assert retriever.manifest["model_version"] == "tiny-0"


def test_failed_swap_keeps_serving(two_bundles, tmp_path):
    a, _ = two_bundles
    retriever = Retriever.load(a)
    with pytest.raises(FileNotFoundError):
        retriever.swap(tmp_path / "missing")
    assert retriever.search("oak", k=5).count == 5
