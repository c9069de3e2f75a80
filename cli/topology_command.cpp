// `mosaic topology check FILE...`: validate topology files the way
// `mosaic node` will load them, reporting every error as FILE:LINE:COLUMN.

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "topology/loader.hpp"

namespace mosaic::cli {

namespace {

struct topology_check_options {
  std::vector<std::string> files;
  bool check_files = false;
};

int run_topology_check(const topology_check_options& opts) {
  int rc = 0;
  for (const auto& file : opts.files) {
    topology_options options;
    options.check_files = opts.check_files;
    auto report = check_topology_file(file, options);
    if (report.ok()) {
      std::fputs(report.to_string().c_str(), stdout);
      std::fflush(stdout); // keep file order when stdout and stderr share a pipe
      continue;
    }
    rc = 1;
    std::fputs(report.to_string().c_str(), stderr);
    auto n = report.diagnostics.size();
    std::fprintf(stderr, "%s: invalid (%zu error%s)\n", file.c_str(), n, n == 1 ? "" : "s");
  }
  return rc;
}

} // namespace

void add_topology_command(CLI::App& app, int* exit_code) {
  auto* topo = app.add_subcommand("topology", "Work with cluster topology files");
  topo->require_subcommand(1);
  auto* check = topo->add_subcommand(
      "check", "Validate topology files; print every error as FILE:LINE:COLUMN with a fix");
  auto opts = std::make_shared<topology_check_options>();
  check->add_option("FILE", opts->files, "topology YAML files (see deploy/topologies/)")
      ->required();
  check->add_flag("--check-files", opts->check_files,
                  "also check that the model directory and api_keys file exist on this machine");
  check->callback([opts, exit_code] { *exit_code = run_topology_check(*opts); });
}

} // namespace mosaic::cli
