#include "bench/quality_cases.hpp"

#include <cmath>
#include <fstream>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

namespace mosaic::bench {

namespace {

/// A procedurally drawn image: stripes, rings or blobs in seeded colours.
decoded_image draw_image(uint32_t seed, int size) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> c(0, 255);
  const int kind = static_cast<int>(seed % 3);
  const int r0 = c(rng), g0 = c(rng), b0 = c(rng), r1 = c(rng), g1 = c(rng), b1 = c(rng);
  const double freq = 0.02 + 0.1 * (c(rng) / 255.0);
  decoded_image img;
  img.width = img.height = size;
  img.rgb.resize(static_cast<size_t>(size) * size * 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      double t = 0.0;
      const double dx = x - size / 2.0, dy = y - size / 2.0;
      if (kind == 0)
        t = 0.5 + 0.5 * std::sin(freq * (x + 0.5 * y));
      else if (kind == 1)
        t = 0.5 + 0.5 * std::sin(freq * std::sqrt(dx * dx + dy * dy));
      else
        t = 0.5 + 0.5 * std::sin(freq * x) * std::cos(freq * y);
      uint8_t* px = &img.rgb[(static_cast<size_t>(y) * size + x) * 3];
      px[0] = static_cast<uint8_t>(r0 + t * (r1 - r0));
      px[1] = static_cast<uint8_t>(g0 + t * (g1 - g0));
      px[2] = static_cast<uint8_t>(b0 + t * (b1 - b0));
    }
  return img;
}

result<decoded_image> read_image(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(errc::not_found, "cannot read ", path.string());
  const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in),
                                   std::istreambuf_iterator<char>()};
  auto img = decode_image(bytes, image_limits{});
  if (!img)
    return make_error(img.err().code, path.string(), ": ", img.err().to_string());
  return img;
}

} // namespace

std::vector<quality_case> builtin_cases(int image_size) {
  const std::pair<const char*, int> prompts[] = {
      {"Here are two photos. First: <image> Second: <image> What changed between them?", 2},
      {"I took this at noon <image> and this at night <image> and this one the next day <image> "
       "Which was taken first?",
       3},
      {"Describe the pattern in <image> and say whether it repeats in <image>.", 2},
      {"Look at the left panel <image>, the middle panel <image> and the right panel <image>. "
       "Count the stripes in each.",
       3},
  };
  std::vector<quality_case> out;
  uint32_t image_seed = 1;
  for (const auto& [text, n] : prompts) {
    quality_case c;
    c.user = text;
    for (int i = 0; i < n; ++i)
      c.images.push_back(draw_image(image_seed++, image_size));
    out.push_back(std::move(c));
  }
  return out;
}

result<std::vector<quality_case>> load_vqa_cases(const std::filesystem::path& dir, int limit) {
  using json = nlohmann::json;
  const auto path = dir / "heldout.jsonl";
  std::ifstream in(path);
  if (!in)
    return make_error(errc::not_found, "cannot read ", path.string(),
                      " (tools/train/export_heldout.py writes it)");
  std::vector<quality_case> out;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line) && (limit <= 0 || static_cast<int>(out.size()) < limit)) {
    ++line_no;
    if (line.empty())
      continue;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    auto bad = [&](const char* what) {
      return make_error(errc::invalid_argument, path.string(), ":", std::to_string(line_no), ": ",
                        what);
    };
    if (!j.is_object() || !j.contains("user") || !j["user"].is_string() || !j.contains("images") ||
        !j["images"].is_array() || !j.contains("answer") || !j["answer"].is_string())
      return bad("expected {\"user\": string, \"images\": [file, ...], \"answer\": string}");
    quality_case c;
    c.user = j["user"].get<std::string>();
    c.answer = j["answer"].get<std::string>();
    if (j.contains("kind") && j["kind"].is_string())
      c.kind = j["kind"].get<std::string>();
    for (const auto& f : j["images"]) {
      if (!f.is_string())
        return bad("images must be file names");
      auto img = read_image(dir / f.get<std::string>());
      if (!img)
        return std::move(img).err();
      c.images.push_back(std::move(*img));
    }
    out.push_back(std::move(c));
  }
  if (out.empty())
    return make_error(errc::invalid_argument, path.string(), " holds no questions");
  return out;
}

} // namespace mosaic::bench
