#include "engine/projector.hpp"

#include <string>

namespace mosaic {

result<projector> projector::create(backend& be, const model_config& cfg,
                                    const weight_lookup& lookup) {
  const std::string& act = cfg.projector_hidden_act;
  if (act != "gelu" && act != "quick_gelu")
    return make_error(errc::unsupported, "projector_hidden_act '", act,
                      "' is not supported; expected gelu or quick_gelu");
  const int in = cfg.vision.hidden_size;
  const int out = cfg.text.hidden_size;
  if (in <= 0 || out <= 0)
    return make_error(errc::invalid_argument, "projector: hidden sizes must be positive");
  projector p{be, in, out, act == "gelu"};
  auto up = [&](device_buffer& dst, std::string_view name, std::initializer_list<int64_t> shape) {
    return upload_weight_into(dst, be, lookup, name, shape);
  };
  MOSAIC_TRY(up(p.w1_, "multi_modal_projector.linear_1.weight", {out, in}));
  MOSAIC_TRY(up(p.b1_, "multi_modal_projector.linear_1.bias", {out}));
  MOSAIC_TRY(up(p.w2_, "multi_modal_projector.linear_2.weight", {out, out}));
  MOSAIC_TRY(up(p.b2_, "multi_modal_projector.linear_2.bias", {out}));
  return p;
}

status projector::project(const float* features, float* out, int rows) {
  if (rows <= 0)
    return {};
  if (rows > capacity_rows_) {
    auto buf = be_->allocate(static_cast<size_t>(rows) * out_dim_ * sizeof(float));
    if (!buf)
      return std::move(buf).err();
    mid_ = std::move(*buf);
    capacity_rows_ = rows;
  }
  backend& be = *be_;
  be.matmul(features, w1_.f32(), mid_.f32(), rows, out_dim_, in_dim_, true);
  be.add_bias(mid_.f32(), b1_.f32(), rows, out_dim_);
  const size_t n = static_cast<size_t>(rows) * out_dim_;
  if (exact_gelu_)
    be.gelu(mid_.f32(), n);
  else
    be.quick_gelu(mid_.f32(), n);
  be.matmul(mid_.f32(), w2_.f32(), out, rows, out_dim_, out_dim_, true);
  be.add_bias(out, b2_.f32(), rows, out_dim_);
  return {};
}

result<std::vector<float>> projector::project_host(std::span<const float> features) {
  if (features.size() % static_cast<size_t>(in_dim_) != 0)
    return make_error(errc::invalid_argument, "projector: ", std::to_string(features.size()),
                      " values is not a whole number of rows of ", std::to_string(in_dim_));
  const int rows = static_cast<int>(features.size() / static_cast<size_t>(in_dim_));
  if (rows == 0)
    return std::vector<float>{};
  auto in = be_->allocate(features.size() * sizeof(float));
  if (!in)
    return std::move(in).err();
  const size_t out_n = static_cast<size_t>(rows) * out_dim_;
  auto out = be_->allocate(out_n * sizeof(float));
  if (!out)
    return std::move(out).err();
  MOSAIC_TRY(be_->upload(in->data(), features.data(), features.size() * sizeof(float)));
  MOSAIC_TRY(project(in->f32(), out->f32(), rows));
  MOSAIC_TRY(be_->synchronize());
  std::vector<float> host(out_n);
  MOSAIC_TRY(be_->download(host.data(), out->data(), out_n * sizeof(float)));
  return host;
}

} // namespace mosaic
