#include "topology/topology.hpp"

#include <algorithm>

#include "topology/loader.hpp"

namespace mosaic {

std::string device_spec::to_string() const {
  if (kind == kind_t::cpu)
    return "cpu";
  std::string out = "cuda:";
  out += std::to_string(index);
  return out;
}

const char* to_string(actor_kind kind) noexcept {
  switch (kind) {
  case actor_kind::frontend:
    return "frontend";
  case actor_kind::router:
    return "router";
  case actor_kind::encoder:
    return "encoder";
  case actor_kind::kv_loader:
    return "kv_loader";
  case actor_kind::linker:
    return "linker";
  case actor_kind::prefill:
    return "prefill";
  case actor_kind::decode:
    return "decode";
  }
  return "unknown";
}

const char* to_string(router_strategy s) noexcept {
  switch (s) {
  case router_strategy::least_loaded:
    return "least_loaded";
  case router_strategy::round_robin:
    return "round_robin";
  case router_strategy::cache_aware:
    return "cache_aware";
  }
  return "unknown";
}

const char* to_string(kv_storage_dtype d) noexcept {
  return d == kv_storage_dtype::bf16 ? "bf16" : "f16";
}

const char* to_string(kv_io_engine e) noexcept {
  return e == kv_io_engine::pread ? "pread" : "uring";
}

size_t node_spec::count(actor_kind kind) const noexcept {
  return static_cast<size_t>(std::count_if(actors.begin(), actors.end(),
                                           [kind](const auto& a) { return a.kind() == kind; }));
}

const node_spec* topology::find_node(std::string_view name) const noexcept {
  for (const auto& n : nodes)
    if (n.name == name)
      return &n;
  return nullptr;
}

size_t topology::actor_count() const noexcept {
  size_t total = 0;
  for (const auto& n : nodes)
    total += n.actors.size();
  return total;
}

size_t topology::count(actor_kind kind) const noexcept {
  size_t total = 0;
  for (const auto& n : nodes)
    total += n.count(kind);
  return total;
}

// -- diagnostics --------------------------------------------------------------

std::string topology_diagnostic::to_string() const {
  std::string out = file;
  if (line > 0) {
    out += ':';
    out += std::to_string(line);
    out += ':';
    out += std::to_string(column);
  }
  out += ": ";
  out += message;
  if (!hint.empty()) {
    out += "\n  fix: ";
    out += hint;
  }
  return out;
}

std::string topology_report::to_string() const {
  if (value) {
    auto plural = [](size_t n, const char* word) {
      return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
    };
    return source + ": ok (" + plural(value->nodes.size(), "node") + ", " +
           plural(value->actor_count(), "actor") + ")\n";
  }
  std::string out;
  for (const auto& d : diagnostics)
    out += d.to_string() + "\n";
  return out;
}

} // namespace mosaic
