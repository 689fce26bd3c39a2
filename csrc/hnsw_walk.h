// Our beam search over an hnswlib graph: hnswlib builds, stores and persists the graph; queries
// walk it here.
//
// Same algorithm and results as HierarchicalNSW::searchKnn (greedy descent through the upper
// levels, then a best-first beam of width ef on level 0; deleted or filtered nodes are walked
// through but never returned), organised for memory-level parallelism, which is what bounds a
// query at dim ~128 (the arithmetic is a few ns per vector, a cache miss ~100 ns):
// * each expanded node's unvisited neighbours are collected first and every cache line of their
//   stored vectors is prefetched before the first distance (hnswlib prefetches one line of the
//   next neighbour only, so the rest of an i8/bf16/f32 vector and an i8 scale at its end miss);
// * the two heaps and the neighbour batch live in caller-owned scratch: a search allocates nothing.
#pragma once
#include <hnswlib/hnswlib.h>

#include <cstddef>
#include <utility>
#include <vector>

namespace upper_fast {

struct WalkScratch {
  std::vector<std::pair<float, hnswlib::tableint>> top;   // max-heap on distance: the beam
  std::vector<std::pair<float, hnswlib::tableint>> cand;  // min-heap on distance: to expand
  std::vector<hnswlib::tableint> batch;                   // one node's unvisited neighbours
};

// Beam search of width ef (>= 1). On return scratch.top holds up to ef (distance, internal id)
// pairs in heap order, none deleted or rejected by `allow` (nullptr = allow all). The caller holds
// the index's shared lock (no concurrent add).
void hnsw_walk(const hnswlib::HierarchicalNSW<float>& g, const void* query, std::size_t ef,
               hnswlib::BaseFilterFunctor* allow, WalkScratch& scratch);

}  // namespace upper_fast
