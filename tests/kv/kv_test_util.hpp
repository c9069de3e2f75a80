#pragma once

// Helpers shared by the kv tests: scratch directories, random compiled
// images and keys.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/compiled_image.hpp"
#include "engine/model/sha256.hpp"
#include "tests/support/temp_dir.hpp"

namespace mosaic::kv::test {

/// A fresh directory for one test (tests/support/temp_dir.hpp).
struct scratch_dir : mosaic::testing::temp_dir {
  scratch_dir() : temp_dir("kv-test") {}
};

/// Geometry of the built-in models.
struct geometry {
  int tokens, layers, hidden, kv_dim;
};
inline constexpr geometry tiny_geometry{16, 2, 64, 32};
inline constexpr geometry small_geometry{576, 8, 512, 128};

/// A compiled image filled with normal(0, 2) values.
inline compiled_image random_image(geometry g, uint64_t seed) {
  compiled_image img;
  img.resize(g.tokens, g.layers, g.hidden, g.kv_dim);
  std::mt19937_64 rng{seed};
  std::normal_distribution<float> dist{0.0f, 2.0f};
  for (auto* v : {&img.embeddings, &img.k, &img.v})
    for (auto& x : *v)
      x = dist(rng);
  return img;
}

/// A digest derived from a label (stands in for an image key or a model
/// fingerprint).
inline digest key_of(const std::string& label) {
  return sha256(std::string_view{label});
}

/// Largest |a - b| / max(|b|, 1) over two arrays.
inline float max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = a.size() == b.size() ? 0.0f : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::max(std::fabs(b[i]), 1.0f));
  return worst;
}

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out{p, std::ios::binary | std::ios::trunc};
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

/// Number of files in `<dir>/quarantine/` that are not `.reason` notes.
inline size_t quarantined_files(const std::filesystem::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& de : std::filesystem::directory_iterator{dir / "quarantine", ec})
    if (de.path().extension() != ".reason")
      ++n;
  return n;
}

} // namespace mosaic::kv::test
