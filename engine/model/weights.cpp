#include "engine/model/weights.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/model/mapped_file.hpp"
#include "engine/model/safetensors.hpp"

namespace mosaic {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view lm_head_name = "language_model.lm_head.weight";
constexpr std::string_view embed_name = "language_model.model.embed_tokens.weight";

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// Buffers some checkpoints carry that are not parameters.
bool is_ignored_buffer(std::string_view name) {
  return ends_with(name, ".rotary_emb.inv_freq") || ends_with(name, ".position_ids");
}

// The safetensors files of a model: the shards named by
// model.safetensors.index.json, else every *.safetensors but Mosaic's own
// companion file (the learned KV compressor, which neither the model's
// numerics nor its fingerprint include), sorted.
result<std::vector<fs::path>> weight_files_unchecked(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return make_error(errc::not_found, "model directory ", dir.string(), " does not exist");
  std::vector<fs::path> files;
  auto index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    std::ifstream in(index_path);
    auto index = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object())
      return make_error(errc::corrupt_data, index_path.string(),
                        ": not a JSON object with a \"weight_map\" object");
    std::set<std::string> names;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string())
        return make_error(errc::corrupt_data, index_path.string(), ": weight_map entry '", tensor,
                          "' is not a file name");
      auto f = file.get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
        return make_error(errc::corrupt_data, index_path.string(), ": weight_map entry '", tensor,
                          "' names '", f, "', not a file in the model directory");
      names.insert(f);
    }
    for (const auto& n : names)
      files.push_back(dir / n);
  } else {
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".safetensors" &&
          e.path().filename() != learned_compressor_weights_file)
        files.push_back(e.path());
    std::sort(files.begin(), files.end());
  }
  if (ec)
    return make_error(errc::io_error, "cannot list ", dir.string(), ": ", ec.message());
  if (files.empty())
    return make_error(errc::not_found, "no *.safetensors weights in ", dir.string(),
                      " (Mosaic reads safetensors checkpoints, not .bin)");
  return files;
}

result<std::vector<fs::path>> weight_files(const fs::path& dir) {
  try {
    return weight_files_unchecked(dir);
  } catch (const std::exception& e) { // nlohmann
    return make_error(errc::corrupt_data, dir.string(),
                      "/model.safetensors.index.json: ", e.what());
  }
}

void hash_file(sha256_hasher& h, const fs::path& path, std::span<const uint8_t> bytes) {
  h.update(path.filename().string());
  h.update_u64(bytes.size());
  h.update(bytes);
}

result<sha256_hasher> start_fingerprint(const fs::path& dir) {
  sha256_hasher h;
  h.update(std::string_view("mosaic-model-fingerprint-v1"));
  auto config = mapped_file::open(dir / "config.json");
  if (!config)
    return std::move(config).err();
  hash_file(h, "config.json", config->bytes());
  return h;
}

std::vector<int64_t> shp(std::initializer_list<int64_t> dims) {
  return dims;
}

} // namespace

int64_t host_tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string canonical_tensor_name(std::string_view name) {
  // transformers >= 4.52 (LlavaModel inside LlavaForConditionalGeneration).
  if (starts_with(name, "model.vision_tower."))
    return std::string(name.substr(6));
  if (starts_with(name, "model.multi_modal_projector."))
    return std::string(name.substr(6));
  if (starts_with(name, "model.language_model."))
    return "language_model.model." + std::string(name.substr(21));
  if (name == "lm_head.weight")
    return std::string(lm_head_name);
  if (name == "model.image_newline")
    return "image_newline";
  // Qwen2-VL / Qwen2.5-VL: transformers 4.x keeps the decoder under
  // `model.` and the tower under `visual.`; 5.x under `model.language_model.`
  // (above) and `model.visual.`.
  if (starts_with(name, "model.visual."))
    return std::string(name.substr(6));
  if (starts_with(name, "model.layers.") || starts_with(name, "model.embed_tokens.") ||
      starts_with(name, "model.norm."))
    return "language_model." + std::string(name);
  return std::string(name);
}

namespace {

/// Qwen2-VL / Qwen2.5-VL's vision tower and merger (engine/qwen_vision).
void add_qwen_vision(const model_config& cfg,
                     const std::function<void(std::string, std::vector<int64_t>)>& add) {
  const auto& v = cfg.vision;
  const int64_t e = v.hidden_size, in = v.intermediate_size;
  const int64_t m2 = int64_t{v.spatial_merge_size} * v.spatial_merge_size;
  const bool rms = cfg.qwen25_vl();
  add("visual.patch_embed.proj.weight",
      shp({e, v.num_channels, v.temporal_patch_size, v.patch_size, v.patch_size}));
  for (int i = 0; i < v.num_layers; ++i) {
    const std::string b = "visual.blocks." + std::to_string(i) + ".";
    for (const char* norm : {"norm1", "norm2"}) {
      add(b + norm + ".weight", shp({e}));
      if (!rms)
        add(b + norm + ".bias", shp({e}));
    }
    add(b + "attn.qkv.weight", shp({3 * e, e}));
    add(b + "attn.qkv.bias", shp({3 * e}));
    add(b + "attn.proj.weight", shp({e, e}));
    add(b + "attn.proj.bias", shp({e}));
    const std::vector<std::pair<const char*, bool>> mlp =
        rms ? std::vector<std::pair<const char*, bool>>{{"gate_proj", true},
                                                        {"up_proj", true},
                                                        {"down_proj", false}}
            : std::vector<std::pair<const char*, bool>>{{"fc1", true}, {"fc2", false}};
    for (const auto& [name, widens] : mlp) {
      add(b + "mlp." + name + ".weight", widens ? shp({in, e}) : shp({e, in}));
      add(b + "mlp." + name + ".bias", widens ? shp({in}) : shp({e}));
    }
  }
  add("visual.merger.ln_q.weight", shp({e}));
  if (!rms)
    add("visual.merger.ln_q.bias", shp({e}));
  add("visual.merger.mlp.0.weight", shp({m2 * e, m2 * e}));
  add("visual.merger.mlp.0.bias", shp({m2 * e}));
  add("visual.merger.mlp.2.weight", shp({v.out_hidden_size, m2 * e}));
  add("visual.merger.mlp.2.bias", shp({v.out_hidden_size}));
}

/// LLaVA's CLIP tower, projector and (LLaVA-1.6) image_newline.
template <class Add>
void add_clip_and_projector(const model_config& cfg, Add& add) {
  const auto& v = cfg.vision;
  const int64_t vh = v.hidden_size, vi = v.intermediate_size, p = v.patch_size;
  const int64_t th = cfg.text.hidden_size;
  const std::string vm = "vision_tower.vision_model.";
  add(vm + "embeddings.patch_embedding.weight", shp({vh, v.num_channels, p, p}));
  add(vm + "embeddings.class_embedding", shp({vh}));
  add(vm + "embeddings.position_embedding.weight", shp({v.num_patches() + 1, vh}));
  add(vm + "pre_layrnorm.weight", shp({vh}));
  add(vm + "pre_layrnorm.bias", shp({vh}));
  for (int i = 0; i < v.num_layers; ++i) {
    const bool req = i < v.layers_to_run();
    const std::string l = vm + "encoder.layers." + std::to_string(i) + ".";
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      add(l + "self_attn." + proj + ".weight", shp({vh, vh}), req);
      add(l + "self_attn." + proj + ".bias", shp({vh}), req);
    }
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      add(l + ln + ".weight", shp({vh}), req);
      add(l + ln + ".bias", shp({vh}), req);
    }
    add(l + "mlp.fc1.weight", shp({vi, vh}), req);
    add(l + "mlp.fc1.bias", shp({vi}), req);
    add(l + "mlp.fc2.weight", shp({vh, vi}), req);
    add(l + "mlp.fc2.bias", shp({vh}), req);
  }
  add(vm + "post_layernorm.weight", shp({vh}), false);
  add(vm + "post_layernorm.bias", shp({vh}), false);
  add("multi_modal_projector.linear_1.weight", shp({th, vh}));
  add("multi_modal_projector.linear_1.bias", shp({th}));
  add("multi_modal_projector.linear_2.weight", shp({th, th}));
  add("multi_modal_projector.linear_2.bias", shp({th}));
  if (cfg.anyres())
    add("image_newline", shp({th})); // LLaVA-1.6: after every row of tile features
}

} // namespace

std::vector<expected_tensor> expected_tensors(const model_config& cfg) {
  const auto& t = cfg.text;
  const int64_t th = t.hidden_size, ti = t.intermediate_size, kv = t.kv_dim();
  std::vector<expected_tensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool required = true) {
    out.push_back({std::move(name), std::move(shape), required});
  };
  if (cfg.qwen_vl())
    add_qwen_vision(cfg, [&](std::string name, std::vector<int64_t> shape) {
      add(std::move(name), std::move(shape));
    });
  else
    add_clip_and_projector(cfg, add);
  add(std::string(embed_name), shp({t.vocab_size, th}));
  for (int i = 0; i < t.num_layers; ++i) {
    const std::string l = "language_model.model.layers." + std::to_string(i) + ".";
    add(l + "self_attn.q_proj.weight", shp({th, th}));
    add(l + "self_attn.k_proj.weight", shp({kv, th}));
    add(l + "self_attn.v_proj.weight", shp({kv, th}));
    add(l + "self_attn.o_proj.weight", shp({th, th}));
    if (t.attention_bias) {
      add(l + "self_attn.q_proj.bias", shp({th}));
      add(l + "self_attn.k_proj.bias", shp({kv}));
      add(l + "self_attn.v_proj.bias", shp({kv}));
    }
    add(l + "mlp.gate_proj.weight", shp({ti, th}));
    add(l + "mlp.up_proj.weight", shp({ti, th}));
    add(l + "mlp.down_proj.weight", shp({th, ti}));
    add(l + "input_layernorm.weight", shp({th}));
    add(l + "post_attention_layernorm.weight", shp({th}));
  }
  add("language_model.model.norm.weight", shp({th}));
  add(std::string(lm_head_name), shp({t.vocab_size, th}), !t.tie_word_embeddings);
  return out;
}

result<digest> compute_model_fingerprint(const fs::path& dir) {
  auto files = weight_files(dir);
  if (!files)
    return std::move(files).err();
  auto h = start_fingerprint(dir);
  if (!h)
    return std::move(h).err();
  for (const auto& f : *files) {
    auto map = mapped_file::open(f);
    if (!map)
      return std::move(map).err();
    hash_file(*h, f, map->bytes());
  }
  return h->finish();
}

result<model_weights> model_weights::load(const fs::path& dir, const model_config& cfg) {
  auto files = weight_files(dir);
  if (!files)
    return std::move(files).err();
  auto hasher = start_fingerprint(dir);
  if (!hasher)
    return std::move(hasher).err();

  model_weights w;
  std::map<std::string, std::string, std::less<>> origin; // canonical → "file: name"
  for (const auto& path : *files) {
    auto file = safetensors_file::open(path);
    if (!file)
      return std::move(file).err();
    hash_file(*hasher, path, file->file_bytes());
    for (const auto& info : file->tensors()) {
      if (is_ignored_buffer(info.name))
        continue;
      std::string name = canonical_tensor_name(info.name);
      std::string from = path.filename().string() + ": '" + info.name + "'";
      if (auto it = origin.find(name); it != origin.end())
        return make_error(errc::corrupt_data, "tensor '", name, "' appears twice (", it->second,
                          " and ", from, ")");
      host_tensor t;
      t.shape = info.shape;
      t.data.resize(static_cast<size_t>(info.numel()));
      file->read_f32_into(info, t.data);
      origin.emplace(name, std::move(from));
      w.tensors_.emplace(std::move(name), std::move(t));
    }
  }
  w.fingerprint_ = hasher->finish();

  std::set<std::string, std::less<>> known;
  for (const auto& e : expected_tensors(cfg)) {
    known.insert(e.name);
    auto it = w.tensors_.find(e.name);
    if (it == w.tensors_.end()) {
      if (e.required)
        return make_error(errc::invalid_argument, "model in ", dir.string(), " is missing tensor '",
                          e.name, "' (expected shape ", shape_to_string(e.shape),
                          "); do config.json and the weights match?");
      continue;
    }
    if (it->second.shape != e.shape)
      return make_error(errc::invalid_argument, "tensor '", e.name, "' (", origin[e.name],
                        ") has shape ", shape_to_string(it->second.shape),
                        " but config.json implies ", shape_to_string(e.shape));
  }
  for (const auto& [name, t] : w.tensors_)
    if (!known.contains(name))
      return make_error(errc::invalid_argument, "unexpected tensor '", name, "' (", origin[name],
                        ", shape ", shape_to_string(t.shape), ") in ", dir.string(),
                        "; it is not part of the LLaVA layout config.json describes");
  // Tied embeddings: the output projection IS the embedding (as in HF).
  if (cfg.text.tie_word_embeddings)
    w.tensors_.erase(std::string(lm_head_name));
  return w;
}

const host_tensor* model_weights::find(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end())
    return &it->second;
  if (name == lm_head_name) {
    auto e = tensors_.find(embed_name);
    if (e != tensors_.end())
      return &e->second;
  }
  return nullptr;
}

const host_tensor& model_weights::at(std::string_view name) const {
  const host_tensor* t = find(name);
  if (t == nullptr)
    std::abort(); // broken invariant: callers use names validated at load
  return *t;
}

std::vector<std::string> model_weights::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors_)
    out.push_back(name);
  return out;
}

int64_t model_weights::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors_)
    n += t.numel();
  return n;
}

} // namespace mosaic
