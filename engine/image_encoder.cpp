#include "engine/image_encoder.hpp"

#include <algorithm>
#include <string>

#include "engine/model/anyres.hpp"

namespace mosaic {

qwen2vl_image_config qwen_preprocessing(const model_config& cfg) {
  qwen2vl_image_config c;
  c.patch_size = cfg.vision.patch_size;
  c.merge_size = cfg.vision.spatial_merge_size;
  c.temporal_patch_size = cfg.vision.temporal_patch_size;
  c.min_pixels = cfg.vision.min_pixels;
  c.max_pixels = cfg.vision.max_pixels;
  std::copy_n(cfg.vision.image_mean, 3, c.image_mean);
  std::copy_n(cfg.vision.image_std, 3, c.image_std);
  return c;
}

result<image_encoder> image_encoder::create(backend& be, const model_config& cfg,
                                            const weight_lookup& lookup) {
  if (cfg.qwen_vl()) {
    auto q = qwen_vision::create(be, cfg, lookup);
    if (!q)
      return std::move(q).err();
    image_encoder enc{be, cfg};
    enc.qwen_.emplace(std::move(*q));
    return enc;
  }
  auto tower = vision_tower::create(be, cfg.vision, lookup);
  if (!tower)
    return std::move(tower).err();
  auto proj = projector::create(be, cfg, lookup);
  if (!proj)
    return std::move(proj).err();
  if (tower->output_tokens() != cfg.view_tokens())
    return make_error(errc::internal, "vision tower yields ",
                      std::to_string(tower->output_tokens()),
                      " rows per view but the model expects ", std::to_string(cfg.view_tokens()));
  image_encoder enc{be, cfg};
  enc.tower_.emplace(std::move(*tower));
  enc.proj_.emplace(std::move(*proj));
  if (cfg.anyres()) {
    const host_tensor* nl = lookup("image_newline");
    if (nl == nullptr || nl->shape != std::vector<int64_t>{cfg.text.hidden_size})
      return make_error(errc::invalid_argument, "anyres model: tensor 'image_newline' of shape [",
                        std::to_string(cfg.text.hidden_size), "] is missing or has another shape");
    enc.newline_ = nl->data;
  }
  const size_t feat = static_cast<size_t>(enc.view_tokens()) * cfg.vision.hidden_size;
  auto buf = be.allocate(feat * sizeof(float));
  if (!buf)
    return std::move(buf).err();
  enc.features_ = std::move(*buf);
  return enc;
}

status image_encoder::encode_device(const float* image, float* out) {
  if (!tower_)
    return make_error(errc::invalid_argument, "image encoder: Qwen2-VL has no fixed views");
  MOSAIC_TRY(tower_->encode(image, features_.f32()));
  return proj_->project(features_.f32(), out, view_tokens());
}

result<std::vector<float>> image_encoder::encode_preprocessed(std::span<const float> image) {
  if (!tower_)
    return make_error(errc::invalid_argument, "image encoder: Qwen2-VL has no fixed views");
  const vision_config& vc = tower_->config();
  const size_t want = static_cast<size_t>(vc.num_channels) * vc.image_size * vc.image_size;
  if (image.size() != want)
    return make_error(errc::invalid_argument, "image encoder: preprocessed image has ",
                      std::to_string(image.size()), " values, expected ", std::to_string(want),
                      " (channels x image_size x image_size)");
  auto img = be_->allocate(want * sizeof(float));
  if (!img)
    return std::move(img).err();
  const size_t out_n = static_cast<size_t>(view_tokens()) * hidden();
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

result<std::vector<float>> image_encoder::encode(const decoded_image& image,
                                                 const std::function<status()>& between_views) {
  if (image.width <= 0 || image.height <= 0 ||
      image.rgb.size() != static_cast<size_t>(image.width) * image.height * 3)
    return make_error(errc::invalid_argument, "image encoder: decoded image is empty or its ",
                      "pixel buffer does not match its ", std::to_string(image.width), "x",
                      std::to_string(image.height), " size");
  if (qwen_) {
    auto px = preprocess_qwen2vl(image, qwen_preprocessing(cfg_));
    if (!px)
      return std::move(px).err();
    return qwen_->encode(px->values, px->grid, between_views);
  }
  if (cfg_.anyres()) {
    auto views = preprocess_anyres(image, cfg_.vision.grid_pinpoints, cfg_.vision);
    if (!views)
      return std::move(views).err();
    return encode_views(*views, image.height, image.width, between_views);
  }
  const std::vector<float> pixels = preprocess_image(image, tower_->config());
  return encode_preprocessed(pixels);
}

result<std::vector<float>>
image_encoder::encode_views(std::span<const float> views, int height, int width,
                            const std::function<status()>& between_views) {
  if (!cfg_.anyres())
    return make_error(errc::invalid_argument, "image encoder: views are for anyres models");
  const vision_config& vc = cfg_.vision;
  const size_t view = static_cast<size_t>(vc.num_channels) * vc.image_size * vc.image_size;
  auto grid = anyres_grid_for(height, width, vc.grid_pinpoints, vc.image_size);
  if (!grid)
    return std::move(grid).err();
  const size_t n_views = 1 + static_cast<size_t>(grid->tiles());
  if (views.size() != n_views * view)
    return make_error(errc::invalid_argument, "image encoder: ", std::to_string(views.size()),
                      " view values for a ", std::to_string(height), "x", std::to_string(width),
                      " image, expected ", std::to_string(n_views), " views of ",
                      std::to_string(view));
  // One input and one output buffer for every view; each view's rows go
  // straight into their place in `features`.
  const size_t per_view = static_cast<size_t>(view_tokens()) * hidden();
  auto img = be_->allocate(view * sizeof(float));
  if (!img)
    return std::move(img).err();
  auto out = be_->allocate(per_view * sizeof(float));
  if (!out)
    return std::move(out).err();
  std::vector<float> features(n_views * per_view);
  for (size_t i = 0; i < n_views; ++i) {
    if (i > 0 && between_views)
      MOSAIC_TRY(between_views());
    MOSAIC_TRY(be_->upload(img->data(), views.data() + i * view, view * sizeof(float)));
    MOSAIC_TRY(encode_device(img->f32(), out->f32()));
    MOSAIC_TRY(be_->synchronize());
    MOSAIC_TRY(
        be_->download(features.data() + i * per_view, out->data(), per_view * sizeof(float)));
  }
  return pack_anyres_features(features, newline_, hidden(), height, width, vc.grid_pinpoints, vc);
}

} // namespace mosaic
