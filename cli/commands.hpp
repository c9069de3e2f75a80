#pragma once

// Every `mosaic` subcommand registers itself on the root app. A command's
// callback stores its exit code in `*exit_code`; errors are printed as one
// line naming the fix, never as a crash.

#include <CLI/CLI.hpp>

namespace mosaic::cli {

/// `mosaic version`
void add_version_command(CLI::App& app, int* exit_code);
// -- subcommand registrations --

} // namespace mosaic::cli
