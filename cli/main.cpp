// mosaic: serving multimodal LLMs with position-independent image KV reuse.

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Mosaic: serve multimodal LLMs, re-using image KV caches at any position"};
  app.require_subcommand(1);
  int exit_code = 0;
  mosaic::cli::add_version_command(app, &exit_code);
  // -- subcommands --
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
