#include "engine/weight_lookup.hpp"

#include <string>
#include <vector>

namespace mosaic {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0)
      out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

} // namespace

result<device_buffer> upload_weight(backend& be, const weight_lookup& lookup, std::string_view name,
                                    std::initializer_list<int64_t> shape) {
  const host_tensor* t = lookup(name);
  if (t == nullptr)
    return make_error(errc::not_found, "model has no tensor '", name,
                      "'; the checkpoint is incomplete or not a LLaVA model");
  std::vector<int64_t> want{shape};
  int64_t numel = 1;
  for (int64_t d : want)
    numel *= d;
  if (t->shape != want || static_cast<int64_t>(t->data.size()) != numel)
    return make_error(errc::corrupt_data, "tensor '", name, "' has shape ", shape_text(t->shape),
                      ", expected ", shape_text(want), " from config.json");
  const size_t bytes = static_cast<size_t>(numel) * sizeof(float);
  auto buf = be.allocate(bytes);
  if (!buf)
    return std::move(buf).err();
  MOSAIC_TRY(be.upload(buf->data(), t->data.data(), bytes));
  return std::move(*buf);
}

status upload_weight_into(device_buffer& dst, backend& be, const weight_lookup& lookup,
                          std::string_view name, std::initializer_list<int64_t> shape) {
  auto buf = upload_weight(be, lookup, name, shape);
  if (!buf)
    return std::move(buf).err();
  dst = std::move(*buf);
  return {};
}

} // namespace mosaic
