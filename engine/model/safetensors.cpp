#include "engine/model/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/model/half.hpp"

namespace mosaic {

namespace {

using json = nlohmann::json;

// The safetensors reference implementation refuses headers above 100 MB.
constexpr uint64_t max_header_bytes = 100u << 20;

std::string u64s(uint64_t v) {
  return std::to_string(v);
}

// dtypes that the format defines but Mosaic does not read.
bool is_known_other_dtype(std::string_view s) {
  static constexpr std::string_view known[] = {"BOOL",    "U8",      "I8",      "I16", "U16",
                                               "I32",     "U32",     "I64",     "U64", "F64",
                                               "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4"};
  return std::find(std::begin(known), std::end(known), s) != std::end(known);
}

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

result<tensor_info> parse_tensor_entry(const std::string& name, const json& j) {
  auto bad = [&](auto... parts) {
    return make_error(errc::corrupt_data, "safetensors tensor '", name, "': ", parts...);
  };
  if (!j.is_object())
    return bad("entry is not a JSON object");
  tensor_info t;
  t.name = name;
  auto dt = j.find("dtype");
  if (dt == j.end() || !dt->is_string())
    return bad("missing string field \"dtype\"");
  auto dts = dt->get<std::string>();
  if (dts == "F32")
    t.dtype = st_dtype::f32;
  else if (dts == "F16")
    t.dtype = st_dtype::f16;
  else if (dts == "BF16")
    t.dtype = st_dtype::bf16;
  else if (is_known_other_dtype(dts))
    return make_error(errc::unsupported, "safetensors tensor '", name, "' has dtype ", dts,
                      "; Mosaic reads F32, F16 and BF16 weights (convert the checkpoint)");
  else
    return bad("unknown dtype \"", dts, "\"");
  auto sh = j.find("shape");
  if (sh == j.end() || !sh->is_array())
    return bad("missing array field \"shape\"");
  for (const auto& d : *sh) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0)
      return bad("shape ", sh->dump(), " holds a value that is not a non-negative integer");
    t.shape.push_back(d.get<int64_t>());
  }
  auto off = j.find("data_offsets");
  if (off == j.end() || !off->is_array() || off->size() != 2)
    return bad("missing field \"data_offsets\" [begin, end]");
  for (const auto& d : *off)
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
      return bad("data_offsets ", off->dump(), " are not non-negative integers");
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin)
    return bad("data_offsets [", u64s(t.begin), ", ", u64s(t.end), "] end before they begin");
  // Byte size implied by the shape, with overflow checks.
  uint64_t n = dtype_size(t.dtype);
  for (int64_t d : t.shape) {
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
      return bad("shape ", shape_to_string(t.shape), " is too large");
    n *= static_cast<uint64_t>(d);
  }
  if (n != t.nbytes())
    return bad("data_offsets [", u64s(t.begin), ", ", u64s(t.end), "] hold ", u64s(t.nbytes()),
               " bytes but shape ", shape_to_string(t.shape), " of ", to_string(t.dtype), " needs ",
               u64s(n));
  return t;
}

} // namespace

const char* to_string(st_dtype dtype) noexcept {
  switch (dtype) {
  case st_dtype::f32:
    return "F32";
  case st_dtype::f16:
    return "F16";
  case st_dtype::bf16:
    return "BF16";
  }
  return "?";
}

size_t dtype_size(st_dtype dtype) noexcept {
  return dtype == st_dtype::f32 ? 4 : 2;
}

result<st_dtype> parse_dtype(std::string_view name) {
  std::string up(name);
  for (auto& c : up)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (up == "F32")
    return st_dtype::f32;
  if (up == "F16")
    return st_dtype::f16;
  if (up == "BF16")
    return st_dtype::bf16;
  return make_error(errc::invalid_argument, "unknown dtype '", name, "'; use f32, f16 or bf16");
}

int64_t tensor_info::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string shape_to_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0)
      s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

result<safetensors_file> safetensors_file::open(const std::filesystem::path& path) {
  try {
    return open_unchecked(path);
  } catch (const std::exception& e) { // nlohmann or allocation failures
    return make_error(errc::corrupt_data, path.string(),
                      ": unreadable safetensors header: ", e.what());
  }
}

result<safetensors_file> safetensors_file::open_unchecked(const std::filesystem::path& path) {
  auto map = mapped_file::open(path);
  if (!map)
    return std::move(map).err();
  const std::string where = path.string();
  auto bytes = map->bytes();
  if (bytes.size() < 8)
    return make_error(errc::corrupt_data, where, ": file is ", u64s(bytes.size()),
                      " bytes, too short for the 8-byte safetensors header length (truncated?)");
  uint64_t header_len = read_le_u64(bytes.data());
  if (header_len > max_header_bytes || header_len > bytes.size() - 8)
    return make_error(errc::corrupt_data, where, ": header length at byte offset 0 is ",
                      u64s(header_len), " but the file holds ", u64s(bytes.size() - 8),
                      " bytes after it (limit 100 MiB); not a safetensors file or truncated");
  const char* hbeg = reinterpret_cast<const char*>(bytes.data() + 8);
  json header = json::parse(hbeg, hbeg + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return make_error(errc::corrupt_data, where, ": header (byte offsets 8..", u64s(8 + header_len),
                      ") is not a JSON object; not a safetensors file");

  safetensors_file f;
  f.path_ = path;
  f.data_offset_ = 8 + header_len;
  const uint64_t data_size = bytes.size() - f.data_offset_;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        return make_error(errc::corrupt_data, where, ": __metadata__ is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          return make_error(errc::corrupt_data, where, ": __metadata__ value of '", mk,
                            "' is not a string");
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    auto t = parse_tensor_entry(key, value);
    if (!t)
      return make_error(t.err().code, where, ": ", t.err().message);
    if (t->end > data_size)
      return make_error(errc::corrupt_data, where, ": tensor '", key, "' data_offsets [",
                        u64s(t->begin), ", ", u64s(t->end), "] end at file byte offset ",
                        u64s(f.data_offset_ + t->end), " but the file is only ", u64s(bytes.size()),
                        " bytes (truncated?)");
    f.tensors_.push_back(std::move(*t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < f.tensors_.size(); ++i) {
    const auto& a = f.tensors_[i - 1];
    const auto& b = f.tensors_[i];
    if (b.begin < a.end)
      return make_error(errc::corrupt_data, where, ": tensors '", a.name, "' [", u64s(a.begin),
                        ", ", u64s(a.end), ") and '", b.name, "' [", u64s(b.begin), ", ",
                        u64s(b.end), ") overlap in the data region");
  }
  f.map_ = std::move(*map);
  return f;
}

const tensor_info* safetensors_file::find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name)
      return &t;
  return nullptr;
}

std::span<const uint8_t> safetensors_file::raw(const tensor_info& info) const {
  return map_.bytes().subspan(data_offset_ + info.begin, info.nbytes());
}

void safetensors_file::read_f32_into(const tensor_info& info, std::span<float> out) const {
  auto src = raw(info);
  const size_t n = static_cast<size_t>(info.numel());
  if (info.dtype == st_dtype::f32) {
    std::memcpy(out.data(), src.data(), n * 4);
    return;
  }
  // The mapped data need not be 2-byte aligned: convert through an
  // aligned staging chunk with the bulk (vectorised) converters.
  const bool half = info.dtype == st_dtype::f16;
  constexpr size_t chunk = 4096;
  uint16_t staging[chunk];
  for (size_t i = 0; i < n; i += chunk) {
    const size_t m = std::min(chunk, n - i);
    std::memcpy(staging, src.data() + 2 * i, 2 * m);
    if (half)
      f16_to_f32(staging, out.data() + i, m);
    else
      bf16_to_f32(staging, out.data() + i, m);
  }
}

result<std::vector<float>> safetensors_file::read_f32(std::string_view name) const {
  const tensor_info* info = find(name);
  if (info == nullptr)
    return make_error(errc::not_found, path_.string(), ": no tensor '", name, "'");
  std::vector<float> out(static_cast<size_t>(info->numel()));
  read_f32_into(*info, out);
  return out;
}

} // namespace mosaic
