// The `actors:` entries of a node: one reader per actor kind.

#include <algorithm>
#include <array>
#include <cstdio>

#include "topology/parse_context.hpp"

namespace mosaic::topology_detail {

namespace {

constexpr std::array<std::string_view, 7> kind_names = {
    "frontend", "router", "encoder", "kv_loader", "linker", "prefill", "decode"};

constexpr int64_t max_mb = int64_t{1} << 20;
constexpr double max_gb = double(1 << 20);

std::string devices_text(const node_spec& node) {
  std::string out = "[";
  for (size_t i = 0; i < node.devices.size(); ++i)
    out += (i > 0 ? ", " : "") + node.devices[i].to_string();
  return out + "]";
}

/// `device:` of an actor; defaults to the node's first device.
device_spec read_device(map_reader& m, const node_spec& node, bool devices_known,
                        parse_context& ctx) {
  device_spec fallback = node.devices.empty() ? device_spec{} : node.devices.front();
  auto text = m.read_string("device");
  if (!text)
    return fallback;
  auto device = parse_device(*text);
  if (!device) {
    ctx.sink.add(m.value_mark("device"), "unknown device " + quote_value(*text) + " in " + m.what(),
                 "write cpu or cuda:N (N = the GPU ordinal, e.g. cuda:0)");
    return fallback;
  }
  if (devices_known &&
      std::find(node.devices.begin(), node.devices.end(), *device) == node.devices.end()) {
    ctx.sink.add(m.value_mark("device"),
                 m.what() + " uses device " + device->to_string() + ", which is not in the " +
                     "node's devices " + devices_text(node),
                 "add " + device->to_string() + " to the `devices:` list of node '" + node.name +
                     "', or use one of its devices");
  }
  return *device;
}

int read_port(map_reader& m, std::string_view key, int fallback, const node_spec& node,
              parse_context& ctx) {
  if (!m.has(key)) {
    record_port(ctx, node, std::string{key} + " of " + m.what(), fallback, position(m.mark()));
    return fallback;
  }
  auto port = m.read_int(key, 1, 65535);
  if (!port)
    return fallback; // reported; a bad port takes no part in the duplicate check
  record_port(ctx, node, std::string{key} + " of " + m.what(), static_cast<int>(*port),
              position(m.value_mark(key)));
  return static_cast<int>(*port);
}

template <class T>
void set_int(map_reader& m, std::string_view key, int64_t min, int64_t max, T& out) {
  if (auto v = m.read_int(key, min, max))
    out = static_cast<T>(*v);
}

/// A size in GB that must hold at least `min_gb` (a pool or tier smaller
/// than that cannot serve one request: a denormal like 1e-320 passes "> 0").
void set_gb(map_reader& m, std::string_view key, double min_gb, double& out, parse_context& ctx) {
  auto v = m.read_number(key, 0.0, max_gb);
  if (!v)
    return;
  if (*v < min_gb) {
    auto g = [](double x) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", x);
      return std::string{buf};
    };
    ctx.sink.add(m.value_mark(key),
                 "'" + std::string{key} + "' = " + g(*v) + " of " + m.what() +
                     " is below the minimum of " + g(min_gb) + " GB",
                 "use at least " + g(min_gb) + " (" + g(min_gb * 1024) + " MiB)");
    return;
  }
  out = *v;
}

template <class E, size_t N>
void set_choice(map_reader& m, std::string_view key, const std::array<std::string_view, N>& names,
                E& out) {
  if (auto i = m.read_choice(key, names))
    out = static_cast<E>(*i);
}

frontend_spec read_frontend(map_reader& m, const node_spec& node, parse_context& ctx) {
  frontend_spec s;
  s.http_port = read_port(m, "http_port", s.http_port, node, ctx);
  s.zmq_port = read_port(m, "zmq_port", s.zmq_port, node, ctx);
  s.bind = node.host;
  if (auto bind = m.read_string("bind")) {
    if (bind->empty())
      ctx.sink.add(m.value_mark("bind"), "'bind' of " + m.what() + " is empty",
                   "write an address such as 0.0.0.0 or 127.0.0.1, or remove the key");
    else
      s.bind = *bind;
  }
  set_int(m, "max_body_mb", 1, 4096, s.max_body_mb);
  set_int(m, "max_concurrent", 1, 1000000, s.max_concurrent);
  set_int(m, "max_connections", 1, 65536, s.max_connections);
  set_int(m, "max_connections_per_client", 1, 65536, s.max_connections_per_client);
  set_int(m, "header_timeout_s", 1, 3600, s.header_timeout_s);
  set_int(m, "drain_s", 0, 3600, s.drain_s);
  return s;
}

router_spec read_router(map_reader& m) {
  constexpr std::array<std::string_view, 3> strategies = {"least_loaded", "round_robin",
                                                          "cache_aware"};
  router_spec s;
  set_choice(m, "strategy", strategies, s.strategy);
  return s;
}

encoder_spec read_encoder(map_reader& m, const node_spec& node, bool devices_known,
                          parse_context& ctx) {
  encoder_spec s;
  s.device = read_device(m, node, devices_known, ctx);
  set_int(m, "cache_mb", 1, max_mb, s.cache_mb);
  set_int(m, "max_batch", 1, 4096, s.max_batch);
  return s;
}

kv_loader_spec read_kv_loader(map_reader& m, parse_context& ctx) {
  constexpr std::array<std::string_view, 2> storages = {"f16", "bf16"};
  constexpr std::array<std::string_view, 2> engines = {"uring", "pread"};
  kv_loader_spec s;
  if (m.require("library", "library: /var/lib/mosaic/library"))
    s.library = read_path(m, "library", ctx).value_or("");
  set_gb(m, "ram_gb", 1.0 / 1024, s.ram_gb, ctx);
  set_gb(m, "disk_gb", 1.0 / 1024, s.disk_gb, ctx);
  set_choice(m, "storage", storages, s.storage);
  set_choice(m, "io", engines, s.io);
  set_int(m, "queue_depth", 1, 4096, s.queue_depth);
  set_int(m, "ttl_s", 0, int64_t{100} * 365 * 86400, s.ttl_s);
  return s;
}

linker_spec read_linker(map_reader& m, parse_context& ctx) {
  linker_spec s{ctx.defaults.policy};
  if (auto text = m.read_string("policy")) {
    auto policy = parse_policy(*text);
    if (policy)
      s.policy = *policy;
    else
      ctx.sink.add(m.value_mark("policy"),
                   "bad 'policy' of " + m.what() + ": " + policy.err().message,
                   "e.g. policy: \"mpic:32\"");
  }
  return s;
}

prefill_spec read_prefill(map_reader& m, const node_spec& node, bool devices_known,
                          parse_context& ctx) {
  prefill_spec s;
  s.device = read_device(m, node, devices_known, ctx);
  set_int(m, "max_tokens", 0, max_mb, s.max_tokens);
  set_int(m, "chunk_tokens", 16, max_mb, s.chunk_tokens);
  static constexpr std::string_view on_off[] = {"on", "off"};
  if (auto c = m.read_choice("prefix_cache", on_off))
    s.prefix_cache = *c == 0;
  static constexpr std::string_view store_choices[] = {"first", "repeat", "off"};
  if (auto c = m.read_choice("store_after_use", store_choices))
    s.store_after_use = std::string{store_choices[*c]};
  if (auto text = m.read_string("compression")) {
    auto spec = parse_compression(*text);
    if (spec)
      s.compression = *spec;
    else
      ctx.sink.add(m.value_mark("compression"),
                   "bad 'compression' of " + m.what() + ": " + spec.err().message,
                   "e.g. compression: \"snapkv:img=0.25,txt=0.5\" (or none)");
  }
  if (auto text = m.read_string("schedule")) {
    if (*text == "auto" || *text == "off") {
      s.schedule = *text;
    } else if (auto policy = parse_schedule_policy(*text)) {
      s.schedule = *text;
    } else {
      ctx.sink.add(m.value_mark("schedule"),
                   "bad 'schedule' of " + m.what() + ": " + policy.err().message,
                   "e.g. schedule: dynamic, fcfs, p1c1d8, off or auto");
    }
  }
  return s;
}

decode_spec read_decode(map_reader& m, const node_spec& node, bool devices_known,
                        parse_context& ctx) {
  decode_spec s;
  s.device = read_device(m, node, devices_known, ctx);
  set_int(m, "max_batch", 1, 4096, s.max_batch);
  if (auto block = m.read_int("block_size", 1, 1024)) {
    if ((*block & (*block - 1)) != 0)
      ctx.sink.add(m.value_mark("block_size"),
                   "'block_size' = " + std::to_string(*block) + " is not a power of two",
                   "use 8, 16 or 32 (tokens per KV page)");
    else
      s.block_size = static_cast<int>(*block);
  }
  set_gb(m, "pool_gb", 1.0 / 1024, s.pool_gb, ctx);
  return s;
}

} // namespace

std::optional<actor_spec> parse_actor(const YAML::Node& item, size_t index, const node_spec& node,
                                      bool devices_known, parse_context& ctx) {
  std::string where = "actor #" + std::to_string(index + 1) + " of node '" + node.name + "'";
  if (!item.IsMap()) {
    ctx.all_kinds_known = false;
    ctx.sink.add(item.Mark(), where + " must be a map, got " + describe(item),
                 "write e.g. `- { kind: prefill, device: cpu }`");
    return std::nullopt;
  }
  map_reader m{item, where, ctx.sink};
  std::optional<size_t> kind;
  if (m.require("kind", "kind: prefill"))
    kind = m.read_choice("kind", kind_names);
  if (!kind) {
    ctx.all_kinds_known = false;
    return std::nullopt;
  }
  m.set_what(std::string{kind_names[*kind]} + " " + where);
  actor_spec actor;
  actor.origin = position(item.Mark());
  switch (static_cast<actor_kind>(*kind)) {
  case actor_kind::frontend:
    actor.config = read_frontend(m, node, ctx);
    break;
  case actor_kind::router:
    actor.config = read_router(m);
    break;
  case actor_kind::encoder:
    actor.config = read_encoder(m, node, devices_known, ctx);
    break;
  case actor_kind::kv_loader:
    actor.config = read_kv_loader(m, ctx);
    break;
  case actor_kind::linker:
    actor.config = read_linker(m, ctx);
    break;
  case actor_kind::prefill:
    actor.config = read_prefill(m, node, devices_known, ctx);
    break;
  case actor_kind::decode:
    actor.config = read_decode(m, node, devices_known, ctx);
    break;
  }
  m.finish();
  return actor;
}

} // namespace mosaic::topology_detail
