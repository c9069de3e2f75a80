#pragma once

// Topology YAML → validated `topology` (docs/topology.md lists every key
// and rule). The loader never throws and never stops at the first problem:
// it reports every error it finds as `FILE:LINE:COLUMN: message` with a
// one-line fix. yaml-cpp stays behind this header.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "topology/topology.hpp"

namespace mosaic {

/// One problem in a topology file.
struct topology_diagnostic {
  std::string file;
  int line = 0;   ///< 1-based; 0 when the problem concerns the whole file
  int column = 0; ///< 1-based; 0 when `line` is 0
  std::string message;
  std::string hint; ///< how to fix it; may be empty

  /// "FILE:LINE:COLUMN: message" and, when there is a hint, a second line
  /// "  fix: hint". Without a line: "FILE: message".
  std::string to_string() const;
};

/// What checking one topology produced: the topology when it is valid,
/// otherwise every diagnostic (sorted by position).
struct topology_report {
  std::optional<topology> value;
  std::vector<topology_diagnostic> diagnostics;
  std::string source;

  bool ok() const noexcept { return value.has_value(); }
  /// "FILE: ok (N nodes, M actors)" when valid, else one diagnostic per
  /// line(s), each ending in '\n'.
  std::string to_string() const;
};

/// How to load a topology.
struct topology_options {
  /// Relative paths in the file (model, api_keys, library) are resolved
  /// against this directory; empty leaves them relative to the working
  /// directory. `load_topology` sets it to the file's directory.
  std::string base_dir;
  /// Also check that local files exist: the `model` directory (unless
  /// built-in) and the `api_keys` file. Off by default because a topology
  /// is often checked on a machine other than the node that runs it.
  bool check_files = false;
  /// Stop collecting after this many diagnostics (hostile inputs).
  size_t max_diagnostics = 100;
};

/// Largest topology file accepted (bytes).
inline constexpr size_t max_topology_file_bytes = 4u << 20;

/// Checks that `text` is UTF-8 and one YAML document that yaml-cpp 0.7 can
/// load without looping (yaml-cpp issue #1040: a stray ',' at block level
/// makes its loader allocate until the OOM killer steps in). Every YAML
/// reader of the project (topologies here, workloads in sim/) calls this
/// before handing text to yaml-cpp. The error is `source:line:column: ...`.
status check_yaml_document(std::string_view text, std::string_view source_name);

/// Parses and validates YAML text; `source_name` prefixes every diagnostic.
topology_report check_topology_text(std::string_view text, std::string_view source_name,
                                    const topology_options& options = {});

/// Reads `path` and checks it; a missing or unreadable file is a diagnostic.
/// Unless `options.base_dir` is set, relative paths resolve against the
/// file's directory.
topology_report check_topology_file(const std::string& path, topology_options options = {});

/// `check_topology_text` as a result: the error (invalid_argument) carries
/// every diagnostic, one per line.
result<topology> parse_topology(std::string_view text, std::string_view source_name,
                                const topology_options& options = {});

/// `check_topology_file` as a result (not_found / io_error when the file
/// cannot be read, invalid_argument when it is not a valid topology).
result<topology> load_topology(const std::string& path, const topology_options& options = {});

} // namespace mosaic
