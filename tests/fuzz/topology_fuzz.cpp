// Topology YAML (topology/loader.hpp): the document check that guards
// yaml-cpp, then parsing and validation.

#include "tests/fuzz/fuzz_util.hpp"
#include "topology/loader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = mosaic::fuzz::as_text(data, size);
  mosaic::topology_options options;
  options.base_dir = "/nonexistent-fuzz-dir";
  (void)mosaic::check_topology_text(text, "fuzz.yaml", options);
  return 0;
}
