"""Learning the ANN product-boosting weights (UPPER paper, section 5).

Products are indexed as [v ; scale*f] and queries as [q ; w], so the inner product is
cos(q, v) + scale * <w, f>: quality features f (normalised to [0, 1]) lift or sink products inside
the ANN search itself. w is learned after training with Optuna's TPE sampler (seeded) to maximise
purchase recall@K on interactions later than the training window. That window is split in time into
a tuning half (what TPE sees) and a held-out half (what we report); when the learned w does not beat
w = 0 on the held-out half, w = 0 is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["boosted_recall", "learn_boost_weights"]


def boosted_recall(query_vectors: np.ndarray, targets: np.ndarray, hydrated_products: np.ndarray,
                   weights: np.ndarray, k: int) -> float:
    """Share of events whose target product is in the exact top-k of the hydrated scores.

    query_vectors (m, D) float32; targets (m,) int64 product rows; hydrated_products (n, D+F) float32
    ([v ; scale*f]); weights (F,) float32. Exact scoring with upper_fast.topk_inner_product.
    """
    from upper_fast import hydrate_queries, topk_inner_product

    if len(targets) == 0:
        return 0.0
    hq = hydrate_queries(query_vectors, np.ascontiguousarray(weights, dtype=np.float32))
    top = topk_inner_product(hq, hydrated_products, min(k, hydrated_products.shape[0]))
    return float((top.ids == targets[:, None]).any(axis=1).mean())


def learn_boost_weights(query_vectors: np.ndarray, targets: np.ndarray, product_vectors: np.ndarray,
                        quality: np.ndarray, *, scale: float = 0.1, k: int = 100, trials: int = 40,
                        bound: float = 1.0, seed: int = 0, feature_names: list[str] | None = None,
                        progress: bool = False) -> dict[str, Any]:
    """Tune w in [-bound, bound]^F on the first half of the events; report and decide on the second.

    query_vectors (m, D) float32, one per later-window event in time order; targets (m,) int64 the
    engaged product rows; product_vectors (n, D) float32; quality (n, F) float32 in [0, 1].
    Returns the hydration dict stored in the bundle: weights (F floats), scale, feature_names, and a
    report (tuning/held-out recall@k at w = 0 and at the learned w, events per half, trials, kept).
    """
    import optuna

    from upper_fast import hydrate_products

    m = len(targets)
    F = quality.shape[1]
    names = feature_names or [f"f{j}" for j in range(F)]
    zero = np.zeros(F, np.float32)
    report: dict[str, Any] = {"k": k, "trials": trials, "bound": bound, "seed": seed, "events": m}
    if m < 4 or F == 0:
        report.update(kept="zero", reason="too few later-window events to tune on")
        return {"weights": zero.tolist(), "scale": scale, "feature_names": names, "tuning": report}
    half = m // 2
    tune_q, tune_t = query_vectors[:half], targets[:half]
    hold_q, hold_t = query_vectors[half:], targets[half:]
    hydrated = hydrate_products(product_vectors, quality, scale)

    def objective(trial: optuna.Trial) -> float:
        w = np.array([trial.suggest_float(n, -bound, bound) for n in names], np.float32)
        return boosted_recall(tune_q, tune_t, hydrated, w, k)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({n: 0.0 for n in names})
    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    best = np.array([study.best_params[n] for n in names], np.float32)
    report.update(
        tuning_events=half, heldout_events=m - half,
        tuning_recall_zero=boosted_recall(tune_q, tune_t, hydrated, zero, k),
        tuning_recall_learned=float(study.best_value),
        heldout_recall_zero=boosted_recall(hold_q, hold_t, hydrated, zero, k),
        heldout_recall_learned=boosted_recall(hold_q, hold_t, hydrated, best, k),
        learned_weights=best.tolist(),
    )
    report["heldout_gain"] = report["heldout_recall_learned"] - report["heldout_recall_zero"]
    keep = report["heldout_gain"] > 0
    report["kept"] = "learned" if keep else "zero"
    weights = best if keep else zero
    return {"weights": [float(x) for x in weights], "scale": scale, "feature_names": names, "tuning": report}
