// Best-effort 2 MiB page backing for large read-mostly buffers that searches touch at random (the
// index's level-0 block, id-map key buffers, the Retriever's product tables). With 4 KiB pages
// nearly every random access into a buffer of hundreds of MB is a TLB miss, which in a VM costs a
// two-dimensional page walk.
#pragma once
#include <cstddef>

namespace upper_fast {

// Advises the 2 MiB-aligned part of [p, p + bytes) with MADV_HUGEPAGE (future faults; THP
// "madvise" mode) and then MADV_COLLAPSE (Linux 6.1+: converts the pages already there,
// synchronously, no user-space copy). Buffers under 4 MiB are left alone. Returns true when the
// kernel accepted MADV_HUGEPAGE; any failure (other OS, old kernel, THP off, no free huge pages)
// changes nothing.
bool advise_huge_pages(const void* p, std::size_t bytes);

}  // namespace upper_fast
