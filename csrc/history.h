// User histories assembled at each event's timestamp without leakage: for every event, the user's
// most recent engaged products (with their interaction types) and most recent distinct queries,
// taken only from history rows strictly earlier than the event.
#pragma once
#include <cstddef>
#include <cstdint>

namespace upper_fast {

struct HistoryLog {
  std::size_t size;                 // h rows
  const std::int64_t* user;         // (h,) user row, -1 = signed out (ignored)
  const std::int64_t* timestamp;    // (h,)
  const std::int64_t* product;      // (h,) product row, -1 = none
  const std::int8_t* type;          // (h,) 0 = impression / none, 1..4 = engagement
  const std::int64_t* query;        // (h,) query-string row, -1 = none
};

struct HistoryOutput {
  std::size_t n_products, n_queries;  // N and M
  std::int64_t* products;             // (n, N), -1 padded
  std::int8_t* types;                 // (n, N), 0 padded
  std::int64_t* queries;              // (n, M), -1 padded
};

// Events (n,) user rows (-1 = signed out: empty history) and timestamps. Most recent first; rows
// with equal timestamps are ordered by their position in the log (later = more recent). Products:
// rows with type 1..4 and product >= 0, duplicates kept. Queries: rows of any type with query >= 0,
// each query once (its most recent use). Throws std::invalid_argument for a type outside 0..4.
void build_histories(std::size_t n, const std::int64_t* event_user, const std::int64_t* event_ts,
                     const HistoryLog& log, const HistoryOutput& out, std::size_t num_threads);

}  // namespace upper_fast
