#include "topology/yaml_fields.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace mosaic::topology_detail {

spec_origin position(const YAML::Mark& mark) noexcept {
  if (mark.is_null())
    return {};
  return {mark.line + 1, mark.column + 1};
}

// -- diagnostic_sink ----------------------------------------------------------

diagnostic_sink::diagnostic_sink(std::string file, size_t max_diagnostics)
  : file_(std::move(file)), max_(std::max<size_t>(max_diagnostics, 1)) {}

void diagnostic_sink::add(spec_origin at, std::string message, std::string hint) {
  if (overflowed_)
    return;
  if (items_.size() >= max_) {
    overflowed_ = true;
    items_.push_back({file_, 0, 0, "too many errors; stopped after " + std::to_string(max_),
                      "fix the errors above and check again"});
    return;
  }
  items_.push_back({file_, at.line, at.column, std::move(message), std::move(hint)});
}

std::vector<topology_diagnostic> diagnostic_sink::take() {
  auto key = [](const topology_diagnostic& d) {
    return std::pair{d.line == 0 ? INT32_MAX : d.line, d.column};
  };
  std::stable_sort(items_.begin(), items_.end(),
                   [&](const auto& a, const auto& b) { return key(a) < key(b); });
  return std::move(items_);
}

// -- message helpers ----------------------------------------------------------

std::string quote_value(std::string_view text) {
  constexpr size_t max_len = 160;
  size_t cut = std::min(text.size(), max_len);
  while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
    --cut;
  std::string out = "'";
  for (size_t i = 0; i < cut; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (cut < text.size())
    out += "...";
  out += "'";
  return out;
}

namespace {

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

} // namespace

std::string_view closest(std::string_view word, std::span<const std::string_view> candidates) {
  if (word.empty() || word.size() > 64)
    return {};
  std::string_view best;
  size_t best_dist = SIZE_MAX;
  for (auto c : candidates) {
    size_t limit = c.size() <= 3 ? 1 : c.size() <= 6 ? 2 : 3;
    size_t d = edit_distance(word, c);
    bool prefix = word.size() >= 3 && (c.starts_with(word) || word.starts_with(c));
    if ((d <= limit || prefix) && d < best_dist) {
      best = c;
      best_dist = d;
    }
  }
  return best;
}

std::string suggestion(std::string_view word, std::span<const std::string_view> candidates) {
  if (auto c = closest(word, candidates); !c.empty())
    return "did you mean '" + std::string{c} + "'?";
  std::string out = "expected one of: ";
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (i > 0)
      out += ", ";
    out += candidates[i];
  }
  return out;
}

const char* describe(const YAML::Node& node) {
  switch (node.Type()) {
  case YAML::NodeType::Map:
    return "a map";
  case YAML::NodeType::Sequence:
    return "a list";
  case YAML::NodeType::Scalar:
    return "a string";
  default:
    return "nothing";
  }
}

// -- scalar conversions -------------------------------------------------------

namespace {

/// Null, list or map where a scalar belongs: reports and returns false.
bool expect_scalar(const YAML::Node& v, const YAML::Mark& at, std::string_view what,
                   std::string_view type, diagnostic_sink& sink) {
  if (v.IsScalar())
    return true;
  if (!v.IsDefined() || v.IsNull())
    sink.add(at, std::string{what} + " has no value",
             "write " + std::string{type} + " after the colon, or remove the key");
  else
    sink.add(at, std::string{what} + " must be " + std::string{type} + ", got " + describe(v),
             "write a single value, not " + std::string{describe(v)});
  return false;
}

bool is_quoted(const YAML::Node& v) {
  return v.Tag() == "!" || v.Tag() == "tag:yaml.org,2002:str";
}

std::string range_text(double min_exclusive, double max) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "greater than %.10g and at most %.10g", min_exclusive, max);
  return buf;
}

} // namespace

std::optional<std::string> to_string_value(const YAML::Node& v, const YAML::Mark& at,
                                           std::string_view what, diagnostic_sink& sink) {
  if (!expect_scalar(v, at, what, "a string", sink))
    return std::nullopt;
  return v.Scalar();
}

std::optional<int64_t> to_int_value(const YAML::Node& v, const YAML::Mark& at,
                                    std::string_view what, int64_t min, int64_t max,
                                    diagnostic_sink& sink) {
  if (!expect_scalar(v, at, what, "an integer", sink))
    return std::nullopt;
  const std::string& text = v.Scalar();
  std::string range =
      "use a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  if (is_quoted(v)) {
    sink.add(at,
             std::string{what} + " must be an integer, got the quoted string " + quote_value(text),
             "remove the quotes");
    return std::nullopt;
  }
  std::string_view digits = text;
  if (digits.starts_with('+'))
    digits.remove_prefix(1);
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  bool all = ptr == digits.data() + digits.size() && !digits.empty();
  if (ec == std::errc::result_out_of_range && all) {
    sink.add(at, std::string{what} + " = " + quote_value(text) + " is out of range", range);
    return std::nullopt;
  }
  if (ec != std::errc{} || !all) {
    sink.add(at, std::string{what} + " must be an integer, got " + quote_value(text), range);
    return std::nullopt;
  }
  if (value < min || value > max) {
    sink.add(at, std::string{what} + " = " + std::to_string(value) + " is out of range", range);
    return std::nullopt;
  }
  return value;
}

std::optional<double> to_number_value(const YAML::Node& v, const YAML::Mark& at,
                                      std::string_view what, double min_exclusive, double max,
                                      diagnostic_sink& sink) {
  if (!expect_scalar(v, at, what, "a number", sink))
    return std::nullopt;
  const std::string& text = v.Scalar();
  std::string range = "use a number " + range_text(min_exclusive, max);
  if (is_quoted(v)) {
    sink.add(at,
             std::string{what} + " must be a number, got the quoted string " + quote_value(text),
             "remove the quotes");
    return std::nullopt;
  }
  std::string_view digits = text;
  if (digits.starts_with('+'))
    digits.remove_prefix(1);
  double value = 0.0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  bool all = ptr == digits.data() + digits.size() && !digits.empty();
  if (ec != std::errc{} || !all || !std::isfinite(value)) {
    bool huge = all && ec == std::errc::result_out_of_range;
    sink.add(at,
             std::string{what} + (huge ? " = " + quote_value(text) + " is out of range"
                                       : " must be a number, got " + quote_value(text)),
             range);
    return std::nullopt;
  }
  if (!(value > min_exclusive) || value > max) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.10g", value);
    sink.add(at, std::string{what} + " = " + buf + " is out of range", range);
    return std::nullopt;
  }
  return value;
}

// -- map_reader ---------------------------------------------------------------

map_reader::map_reader(const YAML::Node& map, std::string what, diagnostic_sink& sink)
  : mark_(map.Mark()), what_(std::move(what)), sink_(sink) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    YAML::Node key = it->first;
    if (!key.IsScalar()) {
      sink_.add(key.Mark(), "keys of " + what_ + " must be plain names, got " + describe(key),
                "write `name: value`");
      continue;
    }
    const std::string& name = key.Scalar();
    if (auto* first = find(name)) {
      auto at = position(first->key_node.Mark());
      sink_.add(key.Mark(),
                "duplicate key " + quote_value(name) + " in " + what_ + " (first set at line " +
                    std::to_string(at.line) + ")",
                "keep only one of them");
      continue;
    }
    entries_.push_back({name, key, it->second, false});
  }
}

map_reader::entry* map_reader::find(std::string_view key) {
  for (auto& e : entries_)
    if (e.key == key)
      return &e;
  return nullptr;
}

bool map_reader::has(std::string_view key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end())
    known_.emplace_back(key);
  if (auto* e = find(key)) {
    e->known = true;
    return true;
  }
  return false;
}

YAML::Node map_reader::value(std::string_view key) {
  if (!has(key))
    return YAML::Node{YAML::NodeType::Null};
  return find(key)->value;
}

YAML::Mark map_reader::value_mark(std::string_view key) {
  auto* e = find(key);
  if (e == nullptr)
    return mark_;
  if (e->value.IsNull())
    return e->key_node.Mark();
  return e->value.Mark();
}

bool map_reader::require(std::string_view key, std::string_view example) {
  if (has(key))
    return true;
  sink_.add(mark_, what_ + " is missing the required key '" + std::string{key} + "'",
            "add `" + std::string{example} + "`");
  return false;
}

std::optional<std::string> map_reader::read_string(std::string_view key) {
  if (!has(key))
    return std::nullopt;
  return to_string_value(find(key)->value, value_mark(key), "'" + std::string{key} + "'", sink_);
}

std::optional<int64_t> map_reader::read_int(std::string_view key, int64_t min, int64_t max) {
  if (!has(key))
    return std::nullopt;
  return to_int_value(find(key)->value, value_mark(key), "'" + std::string{key} + "'", min, max,
                      sink_);
}

std::optional<double> map_reader::read_number(std::string_view key, double min_exclusive,
                                              double max) {
  if (!has(key))
    return std::nullopt;
  return to_number_value(find(key)->value, value_mark(key), "'" + std::string{key} + "'",
                         min_exclusive, max, sink_);
}

std::optional<size_t> map_reader::read_choice(std::string_view key,
                                              std::span<const std::string_view> choices) {
  auto text = read_string(key);
  if (!text)
    return std::nullopt;
  for (size_t i = 0; i < choices.size(); ++i)
    if (choices[i] == *text)
      return i;
  sink_.add(value_mark(key),
            "unknown " + std::string{key} + " " + quote_value(*text) + " in " + what_,
            suggestion(*text, choices));
  return std::nullopt;
}

void map_reader::finish() {
  std::vector<std::string_view> known(known_.begin(), known_.end());
  for (const auto& e : entries_) {
    if (e.known)
      continue;
    sink_.add(e.key_node.Mark(), "unknown key " + quote_value(e.key) + " in " + what_,
              suggestion(e.key, known));
  }
}

} // namespace mosaic::topology_detail
