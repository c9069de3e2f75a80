// Hostile and random inputs never crash the loader: they produce
// diagnostics (with sane positions), never an exception or an abort.

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "tests/topology/topology_test_util.hpp"

namespace mosaic {
namespace {

using testing::check_yaml;
using testing::dump;
using testing::minimal_topology;

int count_lines(std::string_view text) {
  return 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

/// A failed report whose diagnostics all point inside `text`.
void expect_sane_failure(const topology_report& report, std::string_view text) {
  EXPECT_FALSE(report.ok());
  ASSERT_FALSE(report.diagnostics.empty());
  for (const auto& d : report.diagnostics) {
    EXPECT_FALSE(d.message.empty());
    EXPECT_GE(d.line, 0);
    EXPECT_LE(d.line, count_lines(text) + 1) << d.to_string();
    EXPECT_EQ(d.line == 0, d.column == 0) << d.to_string();
  }
}

TEST(topology_hostile, empty_and_comment_only_files) {
  for (std::string_view text : {"", "\n\n", "   ", "# only a comment\n", "~\n", "---\n"}) {
    auto report = check_yaml(text);
    expect_sane_failure(report, text);
    EXPECT_NE(report.to_string().find("t.yaml:1:1: the topology is empty"), std::string::npos)
        << dump(report);
  }
}

TEST(topology_hostile, non_map_documents) {
  for (std::string_view text : {"42\n", "- a\n- b\n", "just words\n", "[1, 2]\n"}) {
    auto report = check_yaml(text);
    expect_sane_failure(report, text);
    EXPECT_NE(report.diagnostics[0].message.find("must be a map"), std::string::npos)
        << dump(report);
  }
  auto two = check_yaml("model: builtin:tiny\n---\nmodel: builtin:small\n");
  EXPECT_NE(two.to_string().find("t.yaml:2:1: a topology file holds one YAML document"),
            std::string::npos)
      << dump(two);
}

TEST(topology_hostile, stray_commas_do_not_hang_the_parser) {
  // yaml-cpp 0.7's LoadAll loops forever, allocating, on these (issue #1040).
  for (std::string_view text : {",", " ,", ",model: builtin:tiny\n", "- a\n,\n"}) {
    auto report = check_yaml(text);
    expect_sane_failure(report, text);
    EXPECT_NE(report.to_string().find("malformed YAML: unexpected ','"), std::string::npos)
        << dump(report);
  }
}

TEST(topology_hostile, random_binary_garbage_is_rejected_as_not_text) {
  std::random_device rd;
  auto seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng{seed};
  for (int round = 0; round < 20; ++round) {
    std::string bytes(1 + rng() % 4096, '\0');
    for (auto& b : bytes)
      b = static_cast<char>(rng() & 0xff);
    bytes[rng() % bytes.size()] = '\0'; // certainly not text
    auto report = check_yaml(bytes);
    expect_sane_failure(report, bytes);
    EXPECT_NE(report.diagnostics[0].message.find("not UTF-8 text"), std::string::npos)
        << dump(report);
  }
}

TEST(topology_hostile, deep_nesting_is_an_error_not_a_stack_overflow) {
  for (std::string open : {"[", "{a: ", "- "}) {
    std::string text = "model: ";
    for (int i = 0; i < 100000; ++i)
      text += open == "- " ? "[" : open;
    auto report = check_yaml(text);
    expect_sane_failure(report, text);
  }
  std::string block = "nodes:\n";
  for (int i = 0; i < 1500; ++i)
    block += std::string(static_cast<size_t>(i), ' ') + "-\n";
  expect_sane_failure(check_yaml(block), block);
}

TEST(topology_hostile, huge_numbers_and_long_strings_stay_bounded) {
  std::string yaml{minimal_topology};
  std::string huge(5000, '9');
  yaml.insert(yaml.find("    actors:"), "    control_port: " + huge + "\n    threads: 1e308\n");
  std::string name(1000, 'x'); // YAML caps simple keys at 1024 chars
  yaml.insert(yaml.find("    actors:"), "    " + name + ": 1\n");
  auto report = check_yaml(yaml);
  expect_sane_failure(report, yaml);
  EXPECT_EQ(report.diagnostics.size(), 3u) << dump(report);
  // Messages quote at most a short prefix of hostile values.
  for (const auto& d : report.diagnostics)
    EXPECT_LT(d.to_string().size(), 600u);
}

TEST(topology_hostile, error_floods_are_capped) {
  std::string yaml = "model: builtin:tiny\n";
  for (int i = 0; i < 1000; ++i)
    yaml += "junk_" + std::to_string(i) + ": 1\n";
  topology_options opts;
  opts.max_diagnostics = 50;
  auto report = check_yaml(yaml, "t.yaml", opts);
  ASSERT_EQ(report.diagnostics.size(), 51u);
  EXPECT_NE(report.diagnostics.back().message.find("too many errors"), std::string::npos);
}

TEST(topology_hostile, oversized_files_and_directories_are_refused) {
  testing::temp_dir dir;
  auto big = dir.write("big.yaml", std::string(max_topology_file_bytes + 10, '#'));
  auto report = check_topology_file(big);
  ASSERT_EQ(report.diagnostics.size(), 1u);
  EXPECT_NE(report.diagnostics[0].message.find("larger than"), std::string::npos);
  auto as_dir = check_topology_file(dir.path().string());
  ASSERT_EQ(as_dir.diagnostics.size(), 1u);
  EXPECT_NE(as_dir.diagnostics[0].message.find("is a directory"), std::string::npos);
}

TEST(topology_hostile, aliases_do_not_blow_up) {
  std::string yaml = "a0: &a0 [x, x]\n";
  for (int i = 1; i < 60; ++i)
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" + std::to_string(i - 1) +
            ", *a" + std::to_string(i - 1) + "]\n";
  yaml += "model: *a59\nnodes: *a59\n";
  expect_sane_failure(check_yaml(yaml), yaml);
}

TEST(topology_hostile, random_mutations_of_a_valid_file_never_crash) {
  std::random_device rd;
  auto seed = rd();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng{seed};
  const std::string alphabet = " \n\t:-[]{},#&*!|>'\"%@`0123456789abcxyz_.~";
  std::string base{minimal_topology};
  base += "defaults: { policy: \"mpic:8\", deadline_ms: 100 }\n";
  int failures = 0;
  for (int round = 0; round < 300; ++round) {
    std::string text = base;
    int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % (text.size() + 1);
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
      case 0:
        text.insert(text.begin() + static_cast<long>(at), c);
        break;
      case 1:
        if (at < text.size())
          text.erase(at, 1 + rng() % 8);
        break;
      default:
        if (at < text.size())
          text[at] = c;
      }
    }
    auto report = check_topology_text(text, "fuzz");
    if (report.ok()) {
      EXPECT_TRUE(report.diagnostics.empty());
      EXPECT_FALSE(report.value->nodes.empty());
      continue;
    }
    ++failures;
    expect_sane_failure(report, text);
  }
  EXPECT_GT(failures, 0);
}

} // namespace
} // namespace mosaic
