#include "cli/cache_build.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/image_encoder.hpp"
#include "engine/llava_engine.hpp"
#include "engine/model/image.hpp"
#include "engine/weight_lookup.hpp"
#include "kv/library.hpp"

namespace mosaic::cli {

namespace {

namespace fs = std::filesystem;

struct build_options {
  std::string model = "builtin:small";
  std::string library;
  std::string images;
  std::string shared = "default";
  std::string dtype = "f16";
  std::string device = "cpu";
};

int fail(const error& e) {
  std::fprintf(stderr, "error: %s\n", e.to_string().c_str());
  return 1;
}

result<std::vector<uint8_t>> read_file(const fs::path& p) {
  std::ifstream in{p, std::ios::binary};
  if (!in)
    return make_error(errc::io_error, "cannot read ", p.string());
  return std::vector<uint8_t>{std::istreambuf_iterator<char>{in}, {}};
}

std::vector<fs::path> image_files(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& de : fs::directory_iterator{dir, ec}) {
    auto ext = de.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (de.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg"))
      out.push_back(de.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

int run_build(const build_options& o) {
  auto dtype = kv::parse_storage_dtype(o.dtype);
  if (!dtype)
    return fail(dtype.err());
  if (auto st = kv::validate_owner_name(o.shared, "--shared"); !st)
    return fail(st.err());
  if (!fs::is_directory(o.images))
    return fail(make_error(errc::not_found, "no image directory ", o.images, "; check --images"));
  const auto files = image_files(o.images);
  if (files.empty())
    return fail(make_error(errc::not_found, "no .png/.jpg/.jpeg files in ", o.images));

  auto be = make_backend(o.device);
  if (!be)
    return fail(be.err());
  auto engine = llava_engine::load(o.model, **be);
  if (!engine)
    return fail(engine.err());
  const auto& cfg = (*engine)->config();
  auto encoder = image_encoder::create(**be, cfg, lookup_in((*engine)->weights()));
  if (!encoder)
    return fail(encoder.err());

  kv::library_options lo;
  lo.dir = o.library;
  lo.model_fingerprint = (*engine)->weights().fingerprint();
  lo.dtype = *dtype;
  lo.n_kv_heads = cfg.text.num_kv_heads;
  lo.head_dim = cfg.text.head_dim();
  lo.ram_budget_bytes = 0; // a batch writer: nothing to re-read
  auto lib = kv::kv_library::open(lo);
  if (!lib)
    return fail(lib.err());
  const auto admin = kv::admin_capability::grant("cli");

  int failures = 0;
  std::printf("%-32s  %-16s  %6s  %10s  %s\n", "IMAGE", "KEY", "TOKENS", "SIZE", "SECONDS");
  for (const auto& path : files) {
    const auto start = std::chrono::steady_clock::now();
    auto step = [&]() -> result<kv::entry_info> {
      auto bytes = read_file(path);
      if (!bytes)
        return std::move(bytes).err();
      auto img = decode_image(*bytes, image_limits{});
      if (!img)
        return std::move(img).err();
      auto emb = encoder->encode(*img);
      if (!emb)
        return std::move(emb).err();
      auto grid = cfg.image_token_grid(img->height, img->width); // M-RoPE models
      if (!grid)
        return std::move(grid).err();
      auto compiled = (*engine)->compile_image(*emb, {}, 0, *grid);
      if (!compiled)
        return std::move(compiled).err();
      return (*lib)->put_shared(admin, o.shared, image_key(*img, cfg.vision), *compiled);
    };
    auto info = step();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!info) {
      ++failures;
      std::fprintf(stderr, "%s: %s\n", path.filename().c_str(), info.err().to_string().c_str());
      continue;
    }
    std::printf("%-32s  %-16s  %6d  %7.1f %s  %.2f\n", path.filename().c_str(),
                to_hex(info->key).substr(0, 16).c_str(), info->n_tokens,
                double(info->file_bytes) / (info->file_bytes < (1 << 20) ? 1024 : 1 << 20),
                info->file_bytes < (1 << 20) ? "KiB" : "MiB", secs);
  }
  std::printf("%zu image%s stored in shared:%s (%s), %d failed\n", files.size() - size_t(failures),
              files.size() - size_t(failures) == 1 ? "" : "s", o.shared.c_str(), o.dtype.c_str(),
              failures);
  return failures == 0 ? 0 : 1;
}

} // namespace

void add_cache_build_command(CLI::App& cache, int* exit_code) {
  auto o = std::make_shared<build_options>();
  auto* build = cache.add_subcommand(
      "build", "Compile the KV of every image in a directory into a shared (dynamic) library");
  build->add_option("--model", o->model, "builtin:tiny, builtin:small or an HF LLaVA directory")
      ->capture_default_str();
  build->add_option("--library", o->library, "KV library directory")->required();
  build->add_option("--images", o->images, "directory of .png/.jpg images")->required();
  build->add_option("--shared", o->shared, "shared library name")->capture_default_str();
  build->add_option("--dtype", o->dtype, "storage type: f16 or bf16")->capture_default_str();
  build->add_option("--device", o->device, "backend: cpu or cuda[:N]")->capture_default_str();
  build->callback([o, exit_code] { *exit_code = run_build(*o); });
}

} // namespace mosaic::cli
