"""The frozen text encoder's pass in float32 against bfloat16 autocast: seconds and agreement.

    python benchmarks/frozen_encode_dtype.py DATA [--titles 4096] [--repeats 3] [--threads 2] [--out result.json]

DATA is a dataset directory (its catalogue's titles are encoded). Tokenizes the first --titles
titles with the all-MiniLM-L6-v2 tokenizer (text_max_len 32, as the `logs` preset), then times
`upper_fast_train.encode.pool_token_rows` (length-sorted batches of 256, as training runs it) in
float32 and in bfloat16, interleaved --repeats times, and reports the median seconds, the speed-up
and the cosine between the two dtypes' pooled vectors (min and mean). Prints the machine, its SIMD
level and what `frozen_encode_dtype="auto"` picks on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _machine import cpu_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--titles", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModel, AutoTokenizer

    import upper_fast
    from upper_fast_train.config import resolve_text_encoder
    from upper_fast_train.encode import frozen_encode_dtype, pool_token_rows
    from upper_fast_train.towers import ProductTower

    torch.set_num_threads(args.threads)
    path = resolve_text_encoder("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    titles = [str(t) for t in pq.read_table(args.data / "catalog.parquet", columns=["title"]).column("title").to_pylist()]
    titles = titles[: args.titles]
    enc = tokenizer(titles, max_length=32, truncation=True, padding="max_length", return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    class _Tower(torch.nn.Module):  # what pool_token_rows reads of model.product_tower
        pool_text = ProductTower.pool_text

        def __init__(self) -> None:
            super().__init__()
            self.text_encoder = encoder

    model = torch.nn.Module()
    model.product_tower = _Tower()
    cpu = torch.device("cpu")
    seconds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    out: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            t0 = time.perf_counter()
            out[name] = pool_token_rows(model, ids, mask, cpu, dtype=dtype)  # type: ignore[arg-type]
            seconds[name].append(time.perf_counter() - t0)
    a, b = out["float32"], out["bfloat16"]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    f32, bf16 = statistics.median(seconds["float32"]), statistics.median(seconds["bfloat16"])
    report = {
        "data": str(args.data), "titles": len(titles), "mean_tokens": float(mask.sum(1).mean()), "threads": args.threads,
        "machine": f"{cpu_model()}, {os.cpu_count()} cpus, {platform.machine()}", "simd": upper_fast.simd_level(),
        "torch": torch.__version__, "auto_picks": str(frozen_encode_dtype("auto", cpu)).removeprefix("torch."),
        "seconds": seconds, "median_s": {"float32": f32, "bfloat16": bf16}, "speedup": f32 / bf16,
        "titles_per_s": {"float32": len(titles) / f32, "bfloat16": len(titles) / bf16},
        "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
    }
    print(f"machine: {report['machine']}; SIMD {report['simd']}; torch {report['torch']} x{args.threads} threads; "
          f"auto picks {report['auto_picks']}")
    print(f"{len(titles):,} titles ({report['mean_tokens']:.1f} tokens): float32 {f32:.2f} s, bfloat16 {bf16:.2f} s "
          f"({report['speedup']:.2f}x); cosine min {report['cosine_min']:.5f}, mean {report['cosine_mean']:.6f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
