// Error types shared by the core. The bindings translate them:
//   std::invalid_argument -> ValueError, std::out_of_range -> IndexError,
//   upper_fast::FormatError -> upper_fast.FormatError (an OSError subclass).
#pragma once
#include <stdexcept>
#include <string>

namespace upper_fast {

// A file that is not ours, is truncated, corrupt, or of an unsupported format version.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace upper_fast
