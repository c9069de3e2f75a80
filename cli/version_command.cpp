#include <cstdio>

#include "cli/commands.hpp"

namespace mosaic::cli {

void add_version_command(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("version", "Print the Mosaic version and build features");
  cmd->callback([exit_code] {
#ifdef MOSAIC_WITH_CUDA
    const char* cuda = "yes";
#else
    const char* cuda = "no";
#endif
    std::printf("mosaic %s\ncuda backend built: %s\n", MOSAIC_VERSION, cuda);
    *exit_code = 0;
  });
}

} // namespace mosaic::cli
