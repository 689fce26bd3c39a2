// The on-disk format of an Index and the file plumbing around it.
//
// File = IndexHeader (kHeaderSize bytes, little-endian) + payload. The payload is hnswlib's own
// serialisation of the graph (its saveIndex format: level-0 block with the stored vectors, then the
// upper-level link lists). The header carries an xxHash64 of the payload and one of itself, so a
// truncated, bit-flipped or foreign file is rejected before hnswlib (which trusts its input) reads
// a byte of it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace upper_fast::index_io {

inline constexpr char kMagic[8] = {'U', 'P', 'F', 'I', 'N', 'D', 'E', 'X'};
inline constexpr std::uint32_t kFormatVersion = 1;
inline constexpr std::size_t kHeaderSize = 88;

struct IndexHeader {
  std::uint32_t version = kFormatVersion;
  std::uint32_t dtype = 0;  // StorageType
  std::uint32_t dim = 0;
  std::uint32_t M = 0;
  std::uint32_t ef_construction = 0;
  std::uint32_t ef = 0;
  std::uint32_t rescore_permille = 1000;  // rescore_factor * 1000
  std::uint64_t seed = 0;
  std::uint64_t count = 0;  // elements in the graph, deleted ones included
  std::uint64_t live = 0;   // elements not marked deleted
  std::uint64_t payload_size = 0;
  std::uint64_t payload_checksum = 0;
};

// An I/O failure with the errno it came from; the bindings raise it as OSError(errno, msg, path).
class IoError : public std::runtime_error {
 public:
  IoError(int err, const std::string& what, std::string path)
      : std::runtime_error(what), err_(err), path_(std::move(path)) {}
  int err() const { return err_; }
  const std::string& path() const { return path_; }

 private:
  int err_;
  std::string path_;
};

// xxHash64 (the published algorithm, seed 0 by default).
std::uint64_t xxh64(const void* data, std::size_t n, std::uint64_t seed = 0);

void encode_header(const IndexHeader& h, unsigned char out[kHeaderSize]);
// Throws FormatError for a foreign file, a future version or a damaged header.
IndexHeader decode_header(const unsigned char* in, std::size_t n, const std::string& path);

// Reads and checks the header only (no payload).
IndexHeader read_header_file(const std::string& path);

// A read-only mapping of a whole file (or of an open descriptor).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  MappedFile(int fd, const std::string& name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void map(int fd, const std::string& name);
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// A scratch file with a path hnswlib's saveIndex/loadIndex can open: an anonymous in-memory file
// (memfd, via /proc/self/fd) where the OS has one, else an unlinked-on-close file in the temp dir.
class ScratchFile {
 public:
  ScratchFile();
  ~ScratchFile();
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  void write_all(const void* data, std::size_t n);

 private:
  int fd_ = -1;
  std::string path_;
  bool unlink_ = false;
};

// Writes head + body to `path` atomically: temp file in the same directory, fsync, rename, fsync of
// the directory. On failure the temp file is removed and the target is left untouched.
void write_atomically(const std::string& path, const void* head, std::size_t head_n, const void* body,
                      std::size_t body_n);

}  // namespace upper_fast::index_io
