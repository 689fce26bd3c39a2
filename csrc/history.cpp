#include "history.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.h"

namespace upper_fast {
namespace {

// Indices of rows with user >= 0, ordered by (user, timestamp, index).
std::vector<std::size_t> sorted_by_user_time(std::size_t n, const std::int64_t* user, const std::int64_t* ts) {
  std::vector<std::size_t> order;
  order.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    if (user[i] >= 0) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (user[a] != user[b]) return user[a] < user[b];
    if (ts[a] != ts[b]) return ts[a] < ts[b];
    return a < b;
  });
  return order;
}

}  // namespace

void build_histories(std::size_t n, const std::int64_t* event_user, const std::int64_t* event_ts,
                     const HistoryLog& log, const HistoryOutput& out, std::size_t num_threads) {
  for (std::size_t i = 0; i < log.size; ++i)
    if (log.type[i] < 0 || log.type[i] > 4)
      throw std::invalid_argument("hist_type[" + std::to_string(i) + "] = " + std::to_string(log.type[i]) +
                                  " is not an interaction code 0..4 (0 = impression/none)");
  const std::size_t N = out.n_products, M = out.n_queries;
  std::fill(out.products, out.products + n * N, std::int64_t{-1});
  std::fill(out.types, out.types + n * N, std::int8_t{0});
  std::fill(out.queries, out.queries + n * M, std::int64_t{-1});

  const std::vector<std::size_t> events = sorted_by_user_time(n, event_user, event_ts);
  const std::vector<std::size_t> hist = sorted_by_user_time(log.size, log.user, log.timestamp);

  // Group boundaries of events by user; each group is replayed against that user's log rows.
  std::vector<std::size_t> group_starts;
  for (std::size_t k = 0; k < events.size(); ++k)
    if (k == 0 || event_user[events[k]] != event_user[events[k - 1]]) group_starts.push_back(k);
  group_starts.push_back(events.size());
  const std::size_t n_groups = group_starts.size() - 1;

  struct alignas(64) State {  // one per thread; aligned against false sharing
    std::vector<std::int64_t> ring_product;  // last N engagements, circular
    std::vector<std::int8_t> ring_type;
    std::vector<std::int64_t> recent_queries;  // most recent first, distinct, at most M
  };
  std::vector<State> states(resolve_threads(num_threads));
  for (State& s : states) {
    s.ring_product.resize(N);
    s.ring_type.resize(N);
    s.recent_queries.reserve(M + 1);
  }

  parallel_for(n_groups, num_threads, 64, [&](std::size_t gb, std::size_t ge, std::size_t tid) {
    State& st = states[tid];
    for (std::size_t g = gb; g < ge; ++g) {
      const std::size_t e_begin = group_starts[g], e_end = group_starts[g + 1];
      const std::int64_t user = event_user[events[e_begin]];
      // This user's log rows: the first row of `hist` whose user is >= user.
      auto it = std::lower_bound(hist.begin(), hist.end(), user,
                                 [&](std::size_t row, std::int64_t u) { return log.user[row] < u; });
      std::size_t h = static_cast<std::size_t>(it - hist.begin());
      std::size_t n_engaged = 0;  // total engagements seen (ring position = n_engaged % N)
      st.recent_queries.clear();
      for (std::size_t k = e_begin; k < e_end; ++k) {
        const std::size_t e = events[k];
        const std::int64_t t = event_ts[e];
        // Replay every row strictly before the event.
        for (; h < hist.size() && log.user[hist[h]] == user && log.timestamp[hist[h]] < t; ++h) {
          const std::size_t r = hist[h];
          if (N > 0 && log.type[r] >= 1 && log.product[r] >= 0) {
            st.ring_product[n_engaged % N] = log.product[r];
            st.ring_type[n_engaged % N] = log.type[r];
            ++n_engaged;
          }
          if (M > 0 && log.query[r] >= 0) {
            auto& q = st.recent_queries;
            auto found = std::find(q.begin(), q.end(), log.query[r]);
            if (found == q.end()) {
              q.insert(q.begin(), log.query[r]);
              if (q.size() > M) q.pop_back();
            } else {
              std::rotate(q.begin(), found, found + 1);
            }
          }
        }
        const std::size_t n_out = std::min(n_engaged, N);
        for (std::size_t j = 0; j < n_out; ++j) {
          const std::size_t pos = (n_engaged - 1 - j) % N;
          out.products[e * N + j] = st.ring_product[pos];
          out.types[e * N + j] = st.ring_type[pos];
        }
        std::copy(st.recent_queries.begin(), st.recent_queries.end(), out.queries + e * M);
      }
    }
  });
}

}  // namespace upper_fast
