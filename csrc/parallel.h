// parallel_for: split [0, n) over threads; the first exception thrown by any worker is stored and
// rethrown in the caller after all workers joined (never std::terminate).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace upper_fast {

// 0 -> hardware concurrency.
inline std::size_t resolve_threads(std::size_t requested) {
  if (requested > 0) return requested;
  std::size_t hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : hw;
}

// Calls fn(begin, end, thread_index) on contiguous chunks of size `grain` (work-stealing by atomic
// counter). Runs inline on the caller when one thread suffices.
template <class Fn>
void parallel_for(std::size_t n, std::size_t num_threads, std::size_t grain, Fn&& fn) {
  if (n == 0) return;
  grain = std::max<std::size_t>(grain, 1);
  const std::size_t chunks = (n + grain - 1) / grain;
  num_threads = std::min(resolve_threads(num_threads), chunks);
  if (num_threads <= 1) {
    fn(std::size_t{0}, n, std::size_t{0});
    return;
  }
  std::atomic<std::size_t> next{0};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&](std::size_t tid) {
    try {
      for (;;) {
        std::size_t c = next.fetch_add(1);
        if (c >= chunks) break;
        std::size_t b = c * grain, e = std::min(n, b + grain);
        fn(b, e, tid);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      next.store(chunks);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(num_threads - 1);
  for (std::size_t t = 1; t < num_threads; ++t) threads.emplace_back(worker, t);
  worker(0);
  for (auto& t : threads) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace upper_fast
