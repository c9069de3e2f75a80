#pragma once

// Internal to mosaic_topology (includes yaml-cpp; never include it from a
// public header). Typed, error-collecting reads of YAML maps: every read
// either yields a valid value or records a diagnostic and yields nothing,
// so a parser can keep going and report all problems of a file at once.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include "topology/loader.hpp"

namespace mosaic::topology_detail {

/// 1-based position of a yaml-cpp mark (0:0 for a null mark).
spec_origin position(const YAML::Mark& mark) noexcept;

/// Collects diagnostics for one file, up to a cap.
class diagnostic_sink {
public:
  diagnostic_sink(std::string file, size_t max_diagnostics);

  void add(spec_origin at, std::string message, std::string hint = {});
  void add(const YAML::Mark& at, std::string message, std::string hint = {}) {
    add(position(at), std::move(message), std::move(hint));
  }
  size_t count() const noexcept { return items_.size(); }
  /// The diagnostics sorted by position (whole-file ones last).
  std::vector<topology_diagnostic> take();

private:
  std::string file_;
  size_t max_;
  bool overflowed_ = false;
  std::vector<topology_diagnostic> items_;
};

/// `text` quoted for a message: truncated, with control bytes escaped, so
/// that hostile input cannot flood or garble the terminal.
std::string quote_value(std::string_view text);

/// The candidate closest to `word` by edit distance, or "" when none is
/// close enough to be a likely typo.
std::string_view closest(std::string_view word, std::span<const std::string_view> candidates);

/// "did you mean 'x'?" or "expected one of: a, b, c".
std::string suggestion(std::string_view word, std::span<const std::string_view> candidates);

/// "a map", "a list", "a string", "nothing": what a node holds, for messages.
const char* describe(const YAML::Node& node);

/// A YAML map read as a struct. Each `read_*` marks its key as known; after
/// all reads `finish()` reports the keys nobody asked for.
class map_reader {
public:
  /// `what` names the map in messages ("node 'p0'", "frontend actor").
  map_reader(const YAML::Node& map, std::string what, diagnostic_sink& sink);

  /// Where the map starts.
  const YAML::Mark& mark() const noexcept { return mark_; }
  const std::string& what() const noexcept { return what_; }
  /// Renames the map once more is known (an actor's kind).
  void set_what(std::string what) { what_ = std::move(what); }
  diagnostic_sink& sink() noexcept { return sink_; }

  /// Whether `key` is present (and marks it known).
  bool has(std::string_view key);
  /// The value of `key` (marks it known); a null node when absent.
  YAML::Node value(std::string_view key);
  /// Where to report a problem with `key`'s value: the value, or the key
  /// itself when the value is empty; the map when the key is absent.
  YAML::Mark value_mark(std::string_view key);

  /// Records "missing required key" for `key` when it is absent.
  bool require(std::string_view key, std::string_view example);

  std::optional<std::string> read_string(std::string_view key);
  std::optional<int64_t> read_int(std::string_view key, int64_t min, int64_t max);
  /// A finite number in (min_exclusive, max].
  std::optional<double> read_number(std::string_view key, double min_exclusive, double max);
  /// A string that must be one of `choices`; returns its index.
  std::optional<size_t> read_choice(std::string_view key,
                                    std::span<const std::string_view> choices);

  /// Reports unknown keys, suggesting the closest known one.
  void finish();

private:
  struct entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
    bool known = false;
  };
  entry* find(std::string_view key);

  YAML::Mark mark_;
  std::string what_;
  diagnostic_sink& sink_;
  std::vector<entry> entries_;
  std::vector<std::string> known_;
};

/// Scalar conversions used by map_reader and by list items. `at` is where
/// to report, `what` names the value ("'http_port'", "device #2").
std::optional<std::string> to_string_value(const YAML::Node& v, const YAML::Mark& at,
                                           std::string_view what, diagnostic_sink& sink);
std::optional<int64_t> to_int_value(const YAML::Node& v, const YAML::Mark& at,
                                    std::string_view what, int64_t min, int64_t max,
                                    diagnostic_sink& sink);
std::optional<double> to_number_value(const YAML::Node& v, const YAML::Mark& at,
                                      std::string_view what, double min_exclusive, double max,
                                      diagnostic_sink& sink);

} // namespace mosaic::topology_detail
