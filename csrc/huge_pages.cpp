#include "huge_pages.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace upper_fast {

bool advise_huge_pages(const void* p, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t hi = (begin + bytes) & ~(kHuge - 1);
  if (p == nullptr || hi <= lo || hi - lo < 2 * kHuge) return false;
  void* start = reinterpret_cast<void*>(lo);
  if (::madvise(start, hi - lo, MADV_HUGEPAGE) != 0) return false;
  (void)::madvise(start, hi - lo, MADV_COLLAPSE);  // may fail (EINVAL before 6.1, EAGAIN): the hint stays
  return true;
#else
  (void)p;
  (void)bytes;
  return false;
#endif
}

}  // namespace upper_fast
