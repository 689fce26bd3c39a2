#include "index_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common.h"

namespace upper_fast::index_io {

namespace {

constexpr std::uint64_t P1 = 11400714785074694791ULL;
constexpr std::uint64_t P2 = 14029467366897019727ULL;
constexpr std::uint64_t P3 = 1609587929392839161ULL;
constexpr std::uint64_t P4 = 9650029242287828579ULL;
constexpr std::uint64_t P5 = 2870177450012600261ULL;

inline std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline std::uint64_t load64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // the format is little-endian, as is every host we build for
}
inline std::uint32_t load32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::uint64_t round64(std::uint64_t acc, std::uint64_t in) { return rotl(acc + in * P2, 31) * P1; }
inline std::uint64_t merge64(std::uint64_t acc, std::uint64_t v) { return (acc ^ round64(0, v)) * P1 + P4; }

void put32(unsigned char* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
void put64(unsigned char* p, std::uint64_t v) { std::memcpy(p, &v, 8); }

[[noreturn]] void throw_errno(const std::string& what, const std::string& path) {
  const int err = errno;
  throw IoError(err, what + " '" + path + "': " + std::strerror(err), path);
}

// Header layout (offsets): magic 0, version 8, header_size 12, dtype 16, dim 20, M 24,
// ef_construction 28, ef 32, rescore_permille 36, seed 40, count 48, live 56, payload_size 64,
// payload_checksum 72, header_checksum 80 (xxh64 of bytes [0, 80)).
constexpr std::size_t kHeaderChecksumAt = 80;

}  // namespace

std::uint64_t xxh64(const void* data, std::size_t n, std::uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + n;
  std::uint64_t h;
  if (n >= 32) {
    std::uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = round64(v1, load64(p));
      v2 = round64(v2, load64(p + 8));
      v3 = round64(v3, load64(p + 16));
      v4 = round64(v4, load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge64(h, v1);
    h = merge64(h, v2);
    h = merge64(h, v3);
    h = merge64(h, v4);
  } else {
    h = seed + P5;
  }
  h += static_cast<std::uint64_t>(n);
  for (; p + 8 <= end; p += 8) h = rotl(h ^ round64(0, load64(p)), 27) * P1 + P4;
  if (p + 4 <= end) {
    h = rotl(h ^ (static_cast<std::uint64_t>(load32(p)) * P1), 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; ++p) h = rotl(h ^ (static_cast<std::uint64_t>(*p) * P5), 11) * P1;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

void encode_header(const IndexHeader& h, unsigned char out[kHeaderSize]) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out, kMagic, 8);
  put32(out + 8, h.version);
  put32(out + 12, static_cast<std::uint32_t>(kHeaderSize));
  put32(out + 16, h.dtype);
  put32(out + 20, h.dim);
  put32(out + 24, h.M);
  put32(out + 28, h.ef_construction);
  put32(out + 32, h.ef);
  put32(out + 36, h.rescore_permille);
  put64(out + 40, h.seed);
  put64(out + 48, h.count);
  put64(out + 56, h.live);
  put64(out + 64, h.payload_size);
  put64(out + 72, h.payload_checksum);
  put64(out + kHeaderChecksumAt, xxh64(out, kHeaderChecksumAt));
}

IndexHeader decode_header(const unsigned char* in, std::size_t n, const std::string& path) {
  if (n < 8 || std::memcmp(in, kMagic, 8) != 0)
    throw FormatError("'" + path + "' is not an upper_fast index file (bad magic bytes)");
  if (n < 16) throw FormatError("'" + path + "' is truncated: the header is incomplete");
  IndexHeader h;
  h.version = load32(in + 8);
  if (h.version == 0 || h.version > kFormatVersion)
    throw FormatError("'" + path + "' has index format version " + std::to_string(h.version) +
                      "; this upper_fast reads version " + std::to_string(kFormatVersion) +
                      " (upgrade upper_fast to read it)");
  if (load32(in + 12) != kHeaderSize) throw FormatError("'" + path + "' has a damaged header (header size)");
  if (n < kHeaderSize) throw FormatError("'" + path + "' is truncated: the header is incomplete");
  if (load64(in + kHeaderChecksumAt) != xxh64(in, kHeaderChecksumAt))
    throw FormatError("'" + path + "' has a damaged header (checksum mismatch)");
  h.dtype = load32(in + 16);
  h.dim = load32(in + 20);
  h.M = load32(in + 24);
  h.ef_construction = load32(in + 28);
  h.ef = load32(in + 32);
  h.rescore_permille = load32(in + 36);
  h.seed = load64(in + 40);
  h.count = load64(in + 48);
  h.live = load64(in + 56);
  h.payload_size = load64(in + 64);
  h.payload_checksum = load64(in + 72);
  if (h.dtype > 2 || h.dim == 0 || h.M < 2 || h.live > h.count)
    throw FormatError("'" + path + "' has a damaged header (field out of range)");
  return h;
}

IndexHeader read_header_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno("cannot open index file", path);
  unsigned char buf[kHeaderSize];
  std::size_t got = 0;
  while (got < kHeaderSize) {
    const ssize_t r = ::read(fd, buf + got, kHeaderSize - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      errno = err;
      throw_errno("cannot read index file", path);
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  ::close(fd);
  return decode_header(buf, got, path);
}

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno("cannot open index file", path);
  try {
    map(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

MappedFile::MappedFile(int fd, const std::string& name) { map(fd, name); }

void MappedFile::map(int fd, const std::string& name) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_errno("cannot stat", name);
  if (!S_ISREG(st.st_mode)) throw IoError(EINVAL, "'" + name + "' is not a regular file", name);
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) throw_errno("cannot map", name);
  data_ = static_cast<const unsigned char*>(p);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
}

ScratchFile::ScratchFile() {
#ifdef __linux__
  fd_ = ::memfd_create("upper_fast_index", MFD_CLOEXEC);
  if (fd_ >= 0) {
    path_ = "/proc/self/fd/" + std::to_string(fd_);
    if (::access(path_.c_str(), R_OK | W_OK) == 0) return;
    ::close(fd_);
    fd_ = -1;
  }
#endif
  std::string tmpl = (std::filesystem::temp_directory_path() / "upper_fast_index.XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) throw_errno("cannot create a scratch file in", tmpl);
  path_ = buf.data();
  unlink_ = true;
}

ScratchFile::~ScratchFile() {
  if (fd_ >= 0) ::close(fd_);
  if (unlink_) ::unlink(path_.c_str());
}

void ScratchFile::write_all(const void* data, std::size_t n) {
  if (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) != 0) throw_errno("cannot reset scratch file", path_);
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw_errno("cannot write scratch file", path_);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

namespace {
void write_fd(int fd, const void* data, std::size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw_errno("cannot write", path);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}
}  // namespace

void write_atomically(const std::string& path, const void* head, std::size_t head_n, const void* body,
                      std::size_t body_n) {
  std::filesystem::path target(path);
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const int fd = ::mkstemp(buf.data());
  if (fd < 0) throw_errno("cannot create a temporary file beside", path);
  const std::string tmp = buf.data();
  bool open = true;
  try {
    write_fd(fd, head, head_n, tmp);
    write_fd(fd, body, body_n, tmp);
    if (::fchmod(fd, 0644) != 0) throw_errno("cannot set permissions of", tmp);
    if (::fsync(fd) != 0) throw_errno("cannot fsync", tmp);
    open = false;
    if (::close(fd) != 0) throw_errno("cannot close", tmp);
  } catch (...) {
    if (open) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    throw_errno("cannot rename the temporary file onto", path);
  }
  // Make the rename itself durable.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace upper_fast::index_io
