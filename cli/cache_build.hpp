#pragma once

// `mosaic cache build`: encode every image of a directory and store its
// compiled KV in a shared (dynamic) library.

#include <CLI/CLI.hpp>

namespace mosaic::cli {

/// Adds `build` to the `cache` command group.
void add_cache_build_command(CLI::App& cache, int* exit_code);

} // namespace mosaic::cli
