#pragma once

// Random images for tests and benchmarks.

#include <cstdint>
#include <random>
#include <vector>

namespace mosaic {

/// A size x size PNG of random RGB noise drawn from `rng` (distinct images
/// for tests and benchmarks).
std::vector<uint8_t> random_png(std::mt19937_64& rng, int size);

} // namespace mosaic
