// hnswlib distance functions over the stored layouts (see ip_space.h), one set per instruction set.
//
// Included by each per-ISA source INSIDE its anonymous namespace, after its dot_* kernels, so the
// kernel is inlined into the distance: hnswlib makes one indirect call per distance and nothing
// more (a second indirect call through the kernel table cost measurable QPS at dim 128).
// `param` points to the dimension (a std::size_t: the first member of IpSpaceParam).
// No include guard on purpose: each per-ISA source includes it exactly once, in its own namespace.

inline std::size_t dist_dim(const void* param) { return *static_cast<const std::size_t*>(param); }

float dist_f32(const void* a, const void* b, const void* param) {
  return -dot_f32(static_cast<const float*>(a), static_cast<const float*>(b), dist_dim(param));
}

float dist_bf16(const void* a, const void* b, const void* param) {
  return -dot_bf16(static_cast<const std::uint16_t*>(a), static_cast<const std::uint16_t*>(b), dist_dim(param));
}

// i8 layout: int8[dim] then a float scale, possibly unaligned (read with memcpy).
float dist_i8(const void* a, const void* b, const void* param) {
  const std::size_t n = dist_dim(param);
  float sa, sb;
  std::memcpy(&sa, static_cast<const char*>(a) + n, sizeof sa);
  std::memcpy(&sb, static_cast<const char*>(b) + n, sizeof sb);
  const std::int32_t d = dot_i8(static_cast<const std::int8_t*>(a), static_cast<const std::int8_t*>(b), n);
  return -(sa * sb * static_cast<float>(d));
}
