#pragma once

// Every `mosaic` subcommand registers itself on the root app. A command's
// callback stores its exit code in `*exit_code`; errors are printed as one
// line naming the fix, never as a crash.

#include <CLI/CLI.hpp>

namespace mosaic::cli {

/// `mosaic version`
void add_version_command(CLI::App& app, int* exit_code);
/// `mosaic keys`: a node's CURVE key pair (cli/keys_command.cpp).
void add_keys_command(CLI::App& app, int* exit_code);
// -- subcommand registrations --
/// `mosaic serve [--topology FILE] [--node NAME] [--dry-run]`
void add_serve_command(CLI::App& app, int* exit_code);
/// `mosaic node --topology FILE --node NAME` (one node of a multi-node cluster)
void add_node_command(CLI::App& app, int* exit_code);
/// `mosaic generate --model M --image FILE... --prompt TEXT --policy P [--compare full]`
void add_generate_command(CLI::App& app, int* exit_code);
/// `mosaic model calibrate --model M`; attaches to the `model` group, so it is
/// registered after add_model_command.
void add_calibrate_command(CLI::App& app, int* exit_code);
/// `mosaic cache ls|verify|rm|stats|build`
void add_cache_command(CLI::App& app, int* exit_code);
/// `mosaic model init|info`; returns the `model` group so that other
/// subcommands (e.g. `calibrate`) can be added to it.
CLI::App* add_model_command(CLI::App& app, int* exit_code);
/// `mosaic topology check FILE...`
void add_topology_command(CLI::App& app, int* exit_code);
/// `mosaic sim run|compare|des|images` (docs/sim.md)
void add_sim_command(CLI::App& app, int* exit_code);
/// `mosaic bench --profile --model M --out profile.json`
void add_bench_command(CLI::App& app, int* exit_code);

} // namespace mosaic::cli
