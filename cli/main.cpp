// mosaic: serving multimodal LLMs with position-independent image KV reuse.

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "engine/cpu/blas_threads.hpp"

int main(int argc, char** argv) {
  mosaic::cpu::blas_exec_with_short_spin(argv); // returns in the re-executed process
  CLI::App app{"Mosaic: serve multimodal LLMs, re-using image KV caches at any position"};
  app.require_subcommand(1);
  int exit_code = 0;
  mosaic::cli::add_version_command(app, &exit_code);
  // -- subcommands --
  mosaic::cli::add_serve_command(app, &exit_code);
  mosaic::cli::add_node_command(app, &exit_code);
  mosaic::cli::add_generate_command(app, &exit_code);
  mosaic::cli::add_cache_command(app, &exit_code);
  mosaic::cli::add_model_command(app, &exit_code);
  mosaic::cli::add_calibrate_command(app, &exit_code); // needs the `model` group
  mosaic::cli::add_topology_command(app, &exit_code);
  mosaic::cli::add_keys_command(app, &exit_code);
  mosaic::cli::add_sim_command(app, &exit_code);
  mosaic::cli::add_bench_command(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
