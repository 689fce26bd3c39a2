// Inner-product space over f32, bf16 or i8 storage: our hnswlib::SpaceInterface<float>.
//
// hnswlib works with distances (smaller = closer); ours is -<a, b>, so a similarity is exactly the
// negated distance. The distance function is chosen once per space (a plain function pointer, as
// hnswlib's API wants) from the SIMD kernel table resolved at start-up; the kernel is inlined into
// it, so one distance is one indirect call.
//
// Stored layout per vector (what hnswlib copies into its level-0 block):
//   f32:  float[dim]
//   bf16: uint16_t[dim] (upper half of the IEEE float, round to nearest even)
//   i8:   int8_t[dim] then one float scale (symmetric per vector: x ~= scale * q, |q| <= 127)
// Both arguments of the distance are in the stored layout: queries are encoded the same way.
#pragma once
#include <hnswlib/hnswlib.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "simd/dispatch.h"

namespace upper_fast {

enum class StorageType : std::uint32_t { f32 = 0, bf16 = 1, i8 = 2 };

// "f32" | "bf16" | "i8"; throws std::invalid_argument naming the valid choices otherwise.
StorageType parse_storage_type(const std::string& name);
const char* storage_type_name(StorageType type);

// What the distance function needs; hnswlib hands it back as `const void* param`. `dim` must stay
// the first member: the kernels' distance functions read it as a std::size_t (simd/dist_impl.h).
struct IpSpaceParam {
  std::size_t dim;
  const simd::Kernels* kernels;
};

class InnerProductSpace final : public hnswlib::SpaceInterface<float> {
 public:
  InnerProductSpace(std::size_t dim, StorageType type);

  std::size_t get_data_size() override { return data_size_; }
  hnswlib::DISTFUNC<float> get_dist_func() override { return dist_; }
  void* get_dist_func_param() override { return &param_; }

  std::size_t dim() const { return param_.dim; }
  StorageType type() const { return type_; }
  std::size_t data_size() const { return data_size_; }

  // x (dim floats, finite) -> stored layout in `out` (data_size() bytes).
  void encode(const float* x, void* out) const;
  // Stored layout -> dim floats (dequantised).
  void decode(const void* stored, float* out) const;
  // <q, stored> with q in full precision; `scratch` holds dim floats (used by i8 only).
  float score(const float* q, const void* stored, float* scratch) const;

 private:
  StorageType type_;
  std::size_t data_size_;
  IpSpaceParam param_;
  hnswlib::DISTFUNC<float> dist_;
};

}  // namespace upper_fast
