#include "ip_space.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace upper_fast {

namespace {

// The scale trails the int8 values, so it may be unaligned: read it with memcpy.
inline float i8_scale(const void* v, std::size_t dim) {
  float s;
  std::memcpy(&s, static_cast<const char*>(v) + dim, sizeof s);
  return s;
}

}  // namespace

StorageType parse_storage_type(const std::string& name) {
  if (name == "f32") return StorageType::f32;
  if (name == "bf16") return StorageType::bf16;
  if (name == "i8") return StorageType::i8;
  throw std::invalid_argument("dtype must be 'f32', 'bf16' or 'i8', got '" + name + "'");
}

const char* storage_type_name(StorageType type) {
  switch (type) {
    case StorageType::bf16: return "bf16";
    case StorageType::i8: return "i8";
    default: return "f32";
  }
}

InnerProductSpace::InnerProductSpace(std::size_t dim, StorageType type)
    : type_(type), param_{dim, &simd::active()} {
  if (dim == 0) throw std::invalid_argument("dim must be positive");
  // dot_i8 accumulates in int32: exact for dim < 2^17.
  if (dim >= (std::size_t{1} << 17)) throw std::invalid_argument("dim must be below 131072");
  switch (type) {
    case StorageType::f32:
      data_size_ = dim * sizeof(float);
      dist_ = param_.kernels->dist_f32;
      break;
    case StorageType::bf16:
      data_size_ = dim * sizeof(std::uint16_t);
      dist_ = param_.kernels->dist_bf16;
      break;
    case StorageType::i8:
      data_size_ = dim + sizeof(float);
      dist_ = param_.kernels->dist_i8;
      break;
    default:
      throw std::invalid_argument("unknown storage type");
  }
  // hnswlib stores its link lists and labels right after each vector: keep those 4-byte aligned
  // (bf16 at odd dims and i8 otherwise leave them misaligned, which UBSan reports). The padding
  // bytes stay zero.
  data_size_ = (data_size_ + 3) & ~std::size_t{3};
}

void InnerProductSpace::encode(const float* x, void* out) const {
  const std::size_t dim = param_.dim;
  switch (type_) {
    case StorageType::f32:
      std::memcpy(out, x, dim * sizeof(float));
      return;
    case StorageType::bf16: {
      auto* o = static_cast<std::uint16_t*>(out);
      for (std::size_t i = 0; i < dim; ++i) o[i] = simd::float_to_bf16(x[i]);
      return;
    }
    case StorageType::i8: {
      float amax = 0.f;
      for (std::size_t i = 0; i < dim; ++i) amax = std::max(amax, std::fabs(x[i]));
      auto* o = static_cast<std::int8_t*>(out);
      const float scale = amax / 127.f;
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      for (std::size_t i = 0; i < dim; ++i) {
        const float r = std::nearbyint(x[i] * inv);
        o[i] = static_cast<std::int8_t>(std::min(127.f, std::max(-127.f, r)));
      }
      std::memcpy(o + dim, &scale, sizeof scale);
      return;
    }
  }
}

void InnerProductSpace::decode(const void* stored, float* out) const {
  const std::size_t dim = param_.dim;
  switch (type_) {
    case StorageType::f32:
      std::memcpy(out, stored, dim * sizeof(float));
      return;
    case StorageType::bf16: {
      const auto* s = static_cast<const std::uint16_t*>(stored);
      for (std::size_t i = 0; i < dim; ++i) out[i] = simd::bf16_to_float(s[i]);
      return;
    }
    case StorageType::i8: {
      const auto* s = static_cast<const std::int8_t*>(stored);
      const float scale = i8_scale(stored, dim);
      for (std::size_t i = 0; i < dim; ++i) out[i] = scale * static_cast<float>(s[i]);
      return;
    }
  }
}

float InnerProductSpace::score(const float* q, const void* stored, float* scratch) const {
  const simd::Kernels& k = *param_.kernels;
  switch (type_) {
    case StorageType::f32:
      return k.dot_f32(q, static_cast<const float*>(stored), param_.dim);
    case StorageType::bf16:
      return k.dot_f32_bf16(q, static_cast<const std::uint16_t*>(stored), param_.dim);
    case StorageType::i8: {
      // No f32 x i8 kernel in the table: widen the int8 values (a vectorisable loop without a
      // reduction), then use the f32 kernel and apply the scale once.
      const auto* s = static_cast<const std::int8_t*>(stored);
      for (std::size_t i = 0; i < param_.dim; ++i) scratch[i] = static_cast<float>(s[i]);
      return i8_scale(stored, param_.dim) * k.dot_f32(q, scratch, param_.dim);
    }
  }
  return 0.f;
}

}  // namespace upper_fast
