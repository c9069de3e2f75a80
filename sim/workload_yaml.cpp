// Workload YAML → workload_spec. yaml-cpp stays inside this file; its
// exceptions are caught here and become errors with file:line.

#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "topology/loader.hpp"

#include "sim/number_text.hpp"
#include "sim/workload.hpp"

namespace mosaic::sim {

namespace {

/// Reads one YAML map, rejecting keys nobody asked for.
class map_fields {
public:
  map_fields(const YAML::Node& node, std::string where, std::string_view source)
    : node_(node), where_(std::move(where)), source_(source) {}

  error fail(const YAML::Node& at, const std::string& message) const {
    const auto m = at.Mark();
    return make_error(errc::invalid_argument, source_, ":", std::to_string(m.line + 1), ": ",
                      where_, ": ", message);
  }

  status is_map() const {
    if (!node_.IsMap())
      return fail(node_, "expected a map");
    return {};
  }

  YAML::Node get(const std::string& key) {
    known_.insert(key);
    return node_[key];
  }

  status finish() const {
    for (const auto& kv : node_) {
      const auto key = kv.first.as<std::string>();
      if (known_.count(key) == 0) {
        std::string list;
        for (const auto& k : known_)
          list += (list.empty() ? "" : ", ") + k;
        return fail(kv.first, "unknown key '" + key + "' (known: " + list + ")");
      }
    }
    return {};
  }

  template <class T>
  status read(const std::string& key, T& out) {
    auto v = get(key);
    if (!v)
      return {};
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      return fail(v, "'" + key + "' has the wrong type");
    }
    return {};
  }

  const std::string& where() const { return where_; }

private:
  YAML::Node node_;
  std::string where_;
  std::string_view source_;
  std::set<std::string> known_;
};

status read_length(map_fields& parent, const std::string& key, length_distribution& out,
                   std::string_view source) {
  auto node = parent.get(key);
  if (!node)
    return {};
  if (node.IsScalar()) {
    // A fixed value.
    try {
      const int v = node.as<int>();
      out = {double(v), 0.0, v, v};
    } catch (const YAML::Exception&) {
      return parent.fail(node, "'" + key + "' must be an integer or {mean, std, min, max}");
    }
    return {};
  }
  map_fields m{node, parent.where() + "." + key, source};
  MOSAIC_TRY(m.is_map());
  MOSAIC_TRY(m.read("mean", out.mean));
  MOSAIC_TRY(m.read("std", out.stddev));
  MOSAIC_TRY(m.read("min", out.min));
  MOSAIC_TRY(m.read("max", out.max));
  return m.finish();
}

status parse_into(const YAML::Node& root, std::string_view source, workload_spec& w) {
  map_fields top{root, "workload", source};
  MOSAIC_TRY(top.is_map());
  MOSAIC_TRY(top.read("name", w.name));
  MOSAIC_TRY(top.read("description", w.description));
  MOSAIC_TRY(top.read("approximations", w.approximations));
  if (auto s = top.get("sources")) {
    if (!s.IsSequence())
      return top.fail(s, "'sources' must be a list of strings");
    for (const auto& item : s)
      w.sources.push_back(item.as<std::string>());
  }

  if (auto d = top.get("dialogue")) {
    map_fields m{d, "dialogue", source};
    MOSAIC_TRY(m.is_map());
    MOSAIC_TRY(read_length(m, "turns", w.turns, source));
    MOSAIC_TRY(read_length(m, "images_per_turn", w.images_per_turn, source));
    MOSAIC_TRY(read_length(m, "question_words", w.question_words, source));
    MOSAIC_TRY(read_length(m, "answer_tokens", w.answer_tokens, source));
    MOSAIC_TRY(m.read("system_words", w.system_words));
    std::string new_images = "every_turn", placement = "leading";
    MOSAIC_TRY(m.read("new_images", new_images));
    MOSAIC_TRY(m.read("placement", placement));
    if (new_images == "first_turn")
      w.new_images = new_images_at::first_turn;
    else if (new_images == "every_turn")
      w.new_images = new_images_at::every_turn;
    else
      return m.fail(d["new_images"], "new_images must be first_turn or every_turn");
    if (placement == "leading")
      w.placement = image_placement::leading;
    else if (placement == "inline")
      w.placement = image_placement::inline_;
    else
      return m.fail(d["placement"], "placement must be leading or inline");
    MOSAIC_TRY(m.finish());
  }

  if (auto i = top.get("images")) {
    map_fields m{i, "images", source};
    MOSAIC_TRY(m.is_map());
    MOSAIC_TRY(m.read("pool", w.image_pool));
    MOSAIC_TRY(m.read("zipf_exponent", w.zipf_exponent));
    MOSAIC_TRY(m.read("size", w.image_size));
    MOSAIC_TRY(m.finish());
  }

  if (auto a = top.get("arrival")) {
    map_fields m{a, "arrival", source};
    MOSAIC_TRY(m.is_map());
    std::string process = "poisson";
    MOSAIC_TRY(m.read("process", process));
    auto p = parse_arrival_process(process);
    if (!p)
      return m.fail(a["process"], p.err().message);
    w.arrivals.process = *p;
    MOSAIC_TRY(m.read("rate", w.arrivals.rate));
    MOSAIC_TRY(m.read("burstiness", w.arrivals.burstiness));
    MOSAIC_TRY(m.read("duration_s", w.arrivals.duration_s));
    MOSAIC_TRY(m.read("max_requests", w.arrivals.max_requests));
    if (auto ramp = m.get("ramp")) {
      if (!ramp.IsSequence())
        return m.fail(ramp, "'ramp' must be a list of {at_s, rate}");
      for (const auto& point : ramp) {
        map_fields pm{point, "arrival.ramp", source};
        MOSAIC_TRY(pm.is_map());
        rate_point rp;
        MOSAIC_TRY(pm.read("at_s", rp.at_s));
        MOSAIC_TRY(pm.read("rate", rp.rate));
        MOSAIC_TRY(pm.finish());
        w.arrivals.ramp.push_back(rp);
      }
    }
    MOSAIC_TRY(m.finish());
  }
  return top.finish();
}

} // namespace

result<workload_spec> parse_workload_spec(std::string_view yaml, std::string_view source) {
  workload_spec w;
  MOSAIC_TRY(check_yaml_document(yaml, source));
  try {
    const YAML::Node root = YAML::Load(std::string{yaml});
    MOSAIC_TRY(parse_into(root, source, w));
  } catch (const YAML::Exception& e) {
    return make_error(errc::invalid_argument, source, ":", std::to_string(e.mark.line + 1),
                      ": not valid YAML: ", e.msg);
  }
  if (auto st = w.validate(); !st)
    return make_error(errc::invalid_argument, source, ": ", st.err().message);
  return w;
}

result<workload_spec> load_workload_spec(const std::string& name_or_path,
                                         const std::filesystem::path& builtin_dir) {
  std::filesystem::path path{name_or_path};
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    path = builtin_dir / (name_or_path + ".yaml");
    if (!std::filesystem::is_regular_file(path, ec)) {
      std::string names;
      for (const auto& de : std::filesystem::directory_iterator{builtin_dir, ec})
        if (de.path().extension() == ".yaml")
          names += (names.empty() ? "" : ", ") + de.path().stem().string();
      return make_error(errc::not_found, "no workload '", name_or_path,
                        "': give a YAML file or one of: ", names.empty() ? "(none found)" : names);
    }
  }
  std::ifstream in{path};
  if (!in)
    return make_error(errc::io_error, "cannot read workload ", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_workload_spec(ss.str(), path.string());
}

} // namespace mosaic::sim
