#include "engine/image_encoder.hpp"

#include <string>

namespace mosaic {

result<image_encoder> image_encoder::create(backend& be, const model_config& cfg,
                                            const weight_lookup& lookup) {
  auto tower = vision_tower::create(be, cfg.vision, lookup);
  if (!tower)
    return std::move(tower).err();
  auto proj = projector::create(be, cfg, lookup);
  if (!proj)
    return std::move(proj).err();
  if (tower->output_tokens() != cfg.image_tokens())
    return make_error(errc::internal, "vision tower yields ",
                      std::to_string(tower->output_tokens()),
                      " rows per image but the model expects ", std::to_string(cfg.image_tokens()));
  image_encoder enc{be, std::move(*tower), std::move(*proj)};
  const size_t feat = static_cast<size_t>(enc.n_tokens()) * cfg.vision.hidden_size;
  auto buf = be.allocate(feat * sizeof(float));
  if (!buf)
    return std::move(buf).err();
  enc.features_ = std::move(*buf);
  return enc;
}

status image_encoder::encode_device(const float* image, float* out) {
  MOSAIC_TRY(tower_.encode(image, features_.f32()));
  return proj_.project(features_.f32(), out, n_tokens());
}

result<std::vector<float>> image_encoder::encode_preprocessed(std::span<const float> image) {
  const vision_config& vc = tower_.config();
  const size_t want = static_cast<size_t>(vc.num_channels) * vc.image_size * vc.image_size;
  if (image.size() != want)
    return make_error(errc::invalid_argument, "image encoder: preprocessed image has ",
                      std::to_string(image.size()), " values, expected ", std::to_string(want),
                      " (channels x image_size x image_size)");
  auto img = be_->allocate(want * sizeof(float));
  if (!img)
    return std::move(img).err();
  const size_t out_n = static_cast<size_t>(n_tokens()) * hidden();
  auto out = be_->allocate(out_n * sizeof(float));
  if (!out)
    return std::move(out).err();
  MOSAIC_TRY(be_->upload(img->data(), image.data(), want * sizeof(float)));
  MOSAIC_TRY(encode_device(img->f32(), out->f32()));
  MOSAIC_TRY(be_->synchronize());
  std::vector<float> host(out_n);
  MOSAIC_TRY(be_->download(host.data(), out->data(), out_n * sizeof(float)));
  return host;
}

result<std::vector<float>> image_encoder::encode(const decoded_image& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3)
    return make_error(errc::invalid_argument, "image encoder: decoded image is empty or its ",
                      "pixel buffer does not match its ", std::to_string(image.width), "x",
                      std::to_string(image.height), " size");
  const std::vector<float> pixels = preprocess_image(image, tower_.config());
  return encode_preprocessed(pixels);
}

} // namespace mosaic
