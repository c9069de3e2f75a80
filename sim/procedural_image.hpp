#pragma once

// Procedurally generated images for workloads: a gradient background with
// a few coloured rectangles and discs, fully determined by (seed, index,
// size), so that the same workload always names the same pixels (and so
// the same library keys) on every machine.

#include <cstdint>
#include <vector>

#include "engine/model/image.hpp"

namespace mosaic::sim {

/// Pool image `index` of a workload generated with `seed`, size x size RGB.
decoded_image procedural_image(uint64_t seed, int index, int size);
/// The same image encoded as PNG.
std::vector<uint8_t> procedural_png(uint64_t seed, int index, int size);

} // namespace mosaic::sim
