#include "bindings/bindings.h"

namespace upper_fast::bindings {
void register_index(pybind11::module_& m) { (void)m; }
}  // namespace upper_fast::bindings
