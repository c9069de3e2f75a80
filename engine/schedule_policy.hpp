#pragma once

// The stages of FastCache's pipeline and how batches form in each
// (engine/stage_scheduler.hpp). Here, in mosaic_base, because the topology
// validates a prefill actor's `schedule:` without depending on the engine.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/error.hpp"

namespace mosaic {

enum class stage_kind : uint8_t { prefill = 0, compress = 1, decode = 2 };
inline constexpr int n_stage_kinds = 3;
std::string_view stage_name(stage_kind s) noexcept;

/// How batches form. Parse with `parse_schedule_policy`: "dynamic",
/// "dynamic:count=4,wait=0.05,max=64", "fcfs", "p2c2d8".
struct schedule_policy {
  enum class kind_t : uint8_t { dynamic, fcfs, fixed };
  kind_t kind = kind_t::dynamic;
  /// dynamic: caps; fixed: the batch sizes (p, c, d). Index by stage_kind.
  std::array<int, n_stage_kinds> batch = {64, 64, 64};
  int count = 1;         ///< dynamic: form a batch once this many wait
  double max_wait = 0.0; ///< form a batch once the oldest waited this long (s)

  std::string to_string() const;
};

/// Parses a schedule policy; errors list the accepted forms.
result<schedule_policy> parse_schedule_policy(std::string_view text);

} // namespace mosaic
