// The top level of a topology document and its nodes.

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "topology/parse_context.hpp"

namespace mosaic::topology_detail {

namespace {

namespace fs = std::filesystem;

constexpr size_t max_nodes = 4096;
constexpr size_t max_list = 1024; // actors or devices of one node

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

/// 40 characters of ZeroMQ's Z85 alphabet (a 32-byte CURVE key).
bool is_z85_key(std::string_view key) {
  static constexpr std::string_view alphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  return key.size() == 40 && std::all_of(key.begin(), key.end(), [](char c) {
           return alphabet.find(c) != std::string_view::npos;
         });
}

bool valid_node_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), is_name_char);
}

/// A host name (dot-separated labels of letters, digits, '-' and '_', none
/// empty, none longer than 63 or starting or ending with '-'), a dotted
/// IPv4 address (four numbers 0..255), or an IPv6 address (with ':').
bool valid_host(std::string_view host) {
  auto ok = [](char c) { return is_name_char(c) || c == ':' || c == '[' || c == ']' || c == '%'; };
  if (host.empty() || host.size() > 253 || !std::all_of(host.begin(), host.end(), ok))
    return false;
  if (host.find(':') != std::string_view::npos)
    return true; // IPv6: left to the resolver
  const bool numeric = std::all_of(host.begin(), host.end(),
                                   [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
  int labels = 0;
  size_t start = 0;
  while (start <= host.size()) {
    const size_t dot = std::min(host.find('.', start), host.size());
    const std::string_view label = host.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    if (numeric && (label.size() > 3 || std::stoi(std::string{label}) > 255))
      return false;
    ++labels;
    start = dot + 1;
  }
  return !numeric || labels == 4 || host.rfind("127.", 0) == 0;
}

std::optional<std::string> resolve_path(std::string_view text, const YAML::Mark& at,
                                        std::string_view key, parse_context& ctx) {
  if (text.empty()) {
    ctx.sink.add(at, "'" + std::string{key} + "' is an empty path",
                 "write a path, or remove the key");
    return std::nullopt;
  }
  fs::path path{std::string{text}};
  if (text == "~" || text.starts_with("~/")) {
    const char* home = std::getenv("HOME"); // shell-style `~`, documented in docs/topology.md
    if (home == nullptr || *home == '\0') {
      ctx.sink.add(at, "cannot expand '~' in '" + std::string{key} + "': HOME is not set",
                   "write an absolute path");
      return std::nullopt;
    }
    path = fs::path{home} / std::string{text.substr(std::min<size_t>(text.size(), 2))};
  } else if (path.is_relative() && !ctx.options.base_dir.empty()) {
    path = fs::path{ctx.options.base_dir} / path;
  }
  return path.lexically_normal().string();
}

void check_file(const std::string& path, bool directory, const YAML::Mark& at, std::string_view key,
                parse_context& ctx) {
  if (!ctx.options.check_files)
    return;
  std::error_code ec;
  auto st = fs::status(path, ec);
  bool ok = directory ? fs::is_directory(st) : fs::is_regular_file(st);
  if (!ok)
    ctx.sink.add(at,
                 "'" + std::string{key} + "' names " + quote_value(path) + ", which is not " +
                     (directory ? "a directory" : "a regular file") + " on this machine",
                 "fix the path (relative paths start at the topology file's directory)");
}

void read_model(map_reader& m, topology& topo, parse_context& ctx) {
  if (!m.require("model", "model: builtin:small"))
    return;
  auto text = m.read_string("model");
  if (!text)
    return;
  if (text->starts_with("builtin:")) {
    if (*text != "builtin:tiny" && *text != "builtin:small")
      ctx.sink.add(m.value_mark("model"), "unknown built-in model " + quote_value(*text),
                   "use builtin:tiny or builtin:small, or the path of an HF LLaVA directory");
    topo.model = *text;
    return;
  }
  if (auto path = resolve_path(*text, m.value_mark("model"), "model", ctx)) {
    check_file(*path, true, m.value_mark("model"), "model", ctx);
    topo.model = *path;
  }
}

request_defaults read_defaults(const YAML::Node& v, const YAML::Mark& at, parse_context& ctx) {
  request_defaults d;
  if (!v.IsMap()) {
    ctx.sink.add(at, "'defaults' must be a map, got " + std::string{describe(v)},
                 "write e.g. `defaults: { policy: \"mpic:32\", deadline_ms: 30000 }`");
    return d;
  }
  map_reader m{v, "'defaults'", ctx.sink};
  if (auto text = m.read_string("policy")) {
    if (auto policy = parse_policy(*text))
      d.policy = *policy;
    else
      ctx.sink.add(m.value_mark("policy"), "bad default 'policy': " + policy.err().message,
                   "e.g. policy: \"mpic:32\"");
  }
  if (auto v2 = m.read_int("deadline_ms", 1, 86400000))
    d.deadline_ms = static_cast<int>(*v2);
  if (auto v2 = m.read_int("max_tokens", 1, 1 << 20))
    d.max_tokens = static_cast<int>(*v2);
  m.finish();
  return d;
}

/// `devices:` of a node. Returns false when the list had errors.
bool read_devices(map_reader& m, node_spec& node, parse_context& ctx) {
  if (!m.has("devices"))
    return true;
  YAML::Node list = m.value("devices");
  auto at = m.value_mark("devices");
  if (!list.IsSequence() || list.size() == 0 || list.size() > max_list) {
    ctx.sink.add(at,
                 "'devices' of " + m.what() + " must be a list of 1 to " +
                     std::to_string(max_list) + " devices, got " +
                     (list.IsSequence() ? std::to_string(list.size()) + " entries"
                                        : std::string{describe(list)}),
                 "write e.g. `devices: [cpu]` or `devices: [cuda:0, cuda:1]`");
    return false;
  }
  bool ok = true;
  std::vector<device_spec> devices;
  for (size_t i = 0; i < list.size(); ++i) {
    YAML::Node item = list[i];
    auto item_at = item.IsNull() ? at : item.Mark();
    auto text = to_string_value(item, item_at, "device #" + std::to_string(i + 1), ctx.sink);
    if (!text) {
      ok = false;
      continue;
    }
    auto device = parse_device(*text);
    if (!device) {
      ctx.sink.add(item_at, "unknown device " + quote_value(*text) + " in " + m.what(),
                   "write cpu or cuda:N (N = the GPU ordinal, e.g. cuda:0)");
      ok = false;
    } else if (std::find(devices.begin(), devices.end(), *device) != devices.end()) {
      ctx.sink.add(item_at, "device " + device->to_string() + " is listed twice in " + m.what(),
                   "list each device once");
      ok = false;
    } else {
      devices.push_back(*device);
    }
  }
  if (!devices.empty())
    node.devices = std::move(devices);
  return ok;
}

void read_actors(map_reader& m, node_spec& node, bool devices_known, parse_context& ctx) {
  if (!m.require("actors", "actors: [ { kind: prefill } ]"))
    return;
  YAML::Node list = m.value("actors");
  if (!list.IsSequence() || list.size() == 0 || list.size() > max_list) {
    ctx.all_kinds_known = false;
    ctx.sink.add(m.value_mark("actors"),
                 "'actors' of " + m.what() + " must be a list of 1 to " + std::to_string(max_list) +
                     " actors, got " +
                     (list.IsSequence() ? std::to_string(list.size()) + " entries"
                                        : std::string{describe(list)}),
                 "write e.g. `actors: [ { kind: prefill, device: cpu } ]`, or remove the node");
    return;
  }
  for (size_t i = 0; i < list.size(); ++i)
    if (auto actor = parse_actor(list[i], i, node, devices_known, ctx))
      node.actors.push_back(std::move(*actor));
}

node_spec read_node(const YAML::Node& item, size_t index, parse_context& ctx) {
  node_spec node;
  node.origin = position(item.Mark());
  map_reader m{item, "node #" + std::to_string(index + 1), ctx.sink};
  if (m.require("name", "name: p0")) {
    if (auto name = m.read_string("name")) {
      if (valid_node_name(*name)) {
        node.name = *name;
        m.set_what("node '" + node.name + "'");
      } else {
        ctx.sink.add(m.value_mark("name"), "node name " + quote_value(*name) + " is not valid",
                     "use 1 to 64 letters, digits, '_', '-' or '.'");
      }
    }
  }
  if (m.require("host", "host: 127.0.0.1")) {
    if (auto host = m.read_string("host")) {
      if (valid_host(*host))
        node.host = *host;
      else
        ctx.sink.add(m.value_mark("host"),
                     "host " + quote_value(*host) + " of " + m.what() +
                         " is not a host name or IP address",
                     "write e.g. host: 10.0.0.5 or host: prefill-0.mosaic.internal");
    }
  }
  for (auto [key, port] :
       {std::pair{"control_port", &node.control_port}, std::pair{"data_port", &node.data_port}}) {
    bool given = m.has(key);
    auto v = m.read_int(key, 1, 65535);
    if (v)
      *port = static_cast<int>(*v);
    if (v || !given)
      record_port(ctx, node, std::string{key} + " of " + m.what(), *port,
                  position(given ? m.value_mark(key) : m.mark()));
  }
  if (auto threads = m.read_int("threads", 0, 4096))
    node.threads = static_cast<int>(*threads);
  if (auto key = m.read_string("public_key")) {
    if (is_z85_key(*key))
      node.public_key = *key;
    else
      ctx.sink.add(m.value_mark("public_key"),
                   "public_key of " + m.what() + " is not a CURVE public key",
                   "paste the 40-character Z85 key `mosaic keys --out FILE` printed");
  }
  if (auto file = read_path(m, "key_file", ctx)) {
    check_file(*file, false, m.value_mark("key_file"), "key_file", ctx);
    node.key_file = *file;
  }
  for (auto [key, field] :
       {std::pair{"tls_cert", &node.tls_cert}, std::pair{"tls_key", &node.tls_key}})
    if (auto file = read_path(m, key, ctx)) {
      check_file(*file, false, m.value_mark(key), key, ctx);
      *field = *file;
    }
  bool devices_known = read_devices(m, node, ctx);
  read_actors(m, node, devices_known, ctx);
  m.finish();
  return node;
}

void read_nodes(map_reader& m, topology& topo, parse_context& ctx) {
  if (!m.require("nodes", "nodes: [ { name: local, host: 127.0.0.1, actors: [...] } ]")) {
    ctx.all_kinds_known = false;
    return;
  }
  YAML::Node list = m.value("nodes");
  if (!list.IsSequence() || list.size() == 0 || list.size() > max_nodes) {
    ctx.all_kinds_known = false;
    ctx.sink.add(m.value_mark("nodes"),
                 "'nodes' must be a list of 1 to " + std::to_string(max_nodes) + " nodes, got " +
                     (list.IsSequence() ? std::to_string(list.size()) + " entries"
                                        : std::string{describe(list)}),
                 "write `nodes:` followed by `- name: ...` entries");
    return;
  }
  std::map<std::string, int, std::less<>> names; // name -> line of first use
  for (size_t i = 0; i < list.size(); ++i) {
    YAML::Node item = list[i];
    if (!item.IsMap()) {
      ctx.all_kinds_known = false;
      ctx.sink.add(item.IsNull() ? m.value_mark("nodes") : item.Mark(),
                   "node #" + std::to_string(i + 1) + " must be a map, got " + describe(item),
                   "write `- name: p0` and the node's keys below it");
      continue;
    }
    node_spec node = read_node(item, i, ctx);
    if (!node.name.empty()) {
      auto [it, fresh] = names.emplace(node.name, node.origin.line);
      if (!fresh)
        ctx.sink.add(node.origin,
                     "duplicate node name '" + node.name + "' (first used at line " +
                         std::to_string(it->second) + ")",
                     "give every node a unique name");
    }
    topo.nodes.push_back(std::move(node));
  }
}

} // namespace

std::optional<device_spec> parse_device(std::string_view text) {
  if (text == "cpu")
    return device_spec{};
  if (!text.starts_with("cuda:"))
    return std::nullopt;
  auto digits = text.substr(5);
  if (digits.empty() || digits.size() > 4 || (digits.size() > 1 && digits[0] == '0'))
    return std::nullopt;
  int index = 0;
  for (char c : digits) {
    if (c < '0' || c > '9')
      return std::nullopt;
    index = index * 10 + (c - '0');
  }
  if (index >= 1024)
    return std::nullopt;
  return device_spec{device_spec::kind_t::cuda, index};
}

std::optional<std::string> read_path(map_reader& m, std::string_view key, parse_context& ctx) {
  auto text = m.read_string(key);
  if (!text)
    return std::nullopt;
  return resolve_path(*text, m.value_mark(key), key, ctx);
}

topology parse_root(const YAML::Node& root, parse_context& ctx) {
  topology topo;
  map_reader m{root, "the topology", ctx.sink};
  read_model(m, topo, ctx);
  if (auto ca = read_path(m, "tls_ca", ctx)) {
    check_file(*ca, false, m.value_mark("tls_ca"), "tls_ca", ctx);
    topo.tls_ca = *ca;
  }
  if (auto keys = read_path(m, "api_keys", ctx)) {
    check_file(*keys, false, m.value_mark("api_keys"), "api_keys", ctx);
    topo.api_keys = *keys;
  }
  if (m.has("defaults"))
    ctx.defaults = read_defaults(m.value("defaults"), m.value_mark("defaults"), ctx);
  topo.defaults = ctx.defaults;
  if (m.has("compression")) // the pre-actor form; say where it went
    ctx.sink.add(m.value_mark("compression"),
                 "'compression' is a key of the prefill actor, not of the topology",
                 "write e.g. `- { kind: prefill, compression: \"snapkv:img=0.25,txt=0.5\" }`");
  read_nodes(m, topo, ctx);
  m.finish();
  spec_origin nodes_at = position(m.has("nodes") ? m.value_mark("nodes") : m.mark());
  check_cluster(topo, nodes_at, ctx);
  return topo;
}

} // namespace mosaic::topology_detail
