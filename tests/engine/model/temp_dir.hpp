#pragma once

// The model tests' name for the shared test directory helper.

#include "tests/support/temp_dir.hpp"

namespace mosaic::test {
using testing::temp_dir;
} // namespace mosaic::test
