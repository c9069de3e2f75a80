// The main() of a fuzz target in the normal build (without libFuzzer):
// runs LLVMFuzzerTestOneInput once on every file named on the command line
// or found (recursively) in a named directory: the seed corpus and every
// crash turned into a regression input. ctest runs it as `fuzz_<name>`;
// scripts/fuzz links the same target with libFuzzer instead.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool run_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", file.c_str());
    return false;
  }
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  // A copy sized exactly, so that AddressSanitizer sees reads past the end.
  std::vector<uint8_t> exact(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
  return true;
}

} // namespace

int main(int argc, char** argv) {
  size_t ran = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg = argv[i];
    if (std::filesystem::is_directory(arg)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::recursive_directory_iterator(arg))
        if (e.is_regular_file())
          files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files)
        ok = run_file(f) && ok, ++ran;
    } else {
      ok = run_file(arg) && ok, ++ran;
    }
  }
  std::printf("ran %zu inputs\n", ran);
  // An empty corpus proves nothing: fail so that a lost directory shows.
  return ok && ran > 0 ? 0 : 1;
}
