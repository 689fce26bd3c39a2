// Registration entry points, one per concern (csrc/bindings/<concern>.cpp).
#pragma once
#include <pybind11/pybind11.h>

namespace upper_fast::bindings {
void register_kernels(pybind11::module_& m);     // hydration, top-k, thresholds
void register_index(pybind11::module_& m);       // Index
void register_featurizer(pybind11::module_& m);  // text featurizer, user history
void register_skipgram(pybind11::module_& m);    // skip-gram SGD pass (item-interaction embeddings)
}  // namespace upper_fast::bindings
