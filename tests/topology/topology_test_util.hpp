#pragma once

// Helpers for the topology tests: write YAML to a fresh temporary file
// (removed again), check it, and look for one diagnostic.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <string_view>

#include "tests/support/temp_dir.hpp"
#include "topology/loader.hpp"

namespace mosaic::testing {

/// Checks `yaml` written to a temporary file named `name`.
inline topology_report check_yaml(std::string_view yaml, const std::string& name = "t.yaml",
                                  topology_options options = {}) {
  temp_dir dir;
  auto file = dir.write(name, yaml);
  auto report = check_topology_file(file, options);
  return report;
}

/// Every diagnostic of `report`, for failure messages.
inline std::string dump(const topology_report& report) {
  std::string out;
  for (const auto& d : report.diagnostics)
    out += d.to_string() + "\n";
  return out;
}

/// The diagnostic at `line`:`column` whose message contains `text`, or
/// nullptr.
inline const topology_diagnostic* find_diag(const topology_report& report, int line, int column,
                                            std::string_view text) {
  for (const auto& d : report.diagnostics)
    if (d.line == line && d.column == column && d.message.find(text) != std::string::npos)
      return &d;
  return nullptr;
}

/// Asserts that `report` has a diagnostic at line:column containing `text`
/// and, when given, a hint containing `hint`.
#define EXPECT_DIAG(report, line, column, text, hint_text)                                         \
  do {                                                                                             \
    const auto* d_ = ::mosaic::testing::find_diag(report, line, column, text);                     \
    EXPECT_NE(d_, nullptr) << "no diagnostic at " << (line) << ":" << (column) << " containing '"  \
                           << (text) << "'; got:\n"                                                \
                           << ::mosaic::testing::dump(report);                                     \
    if (d_ != nullptr) {                                                                           \
      EXPECT_NE(d_->hint.find(hint_text), std::string::npos) << "hint: " << d_->hint;              \
    }                                                                                              \
  } while (false)

/// A small valid cluster; tests splice keys into it.
inline constexpr std::string_view minimal_topology = R"(model: builtin:tiny
nodes:
  - name: local
    host: 127.0.0.1
    actors:
      - { kind: frontend }
      - { kind: encoder }
      - { kind: kv_loader, library: lib }
      - { kind: linker }
      - { kind: prefill }
      - { kind: decode }
)";

} // namespace mosaic::testing
