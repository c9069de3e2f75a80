#include "sim/cost_profile.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

namespace mosaic::sim {

namespace {

// clang-format does not settle on one layout for these lists.
// clang-format off
#define MOSAIC_PROFILE_FIELDS(X)                                                                   \
  X(n_layers) X(image_tokens) X(tokens_per_word)                                                   \
  X(prefill_base_s) X(prefill_per_computed_token_s) X(prefill_per_attended_token_s)                \
  X(encode_per_image_s) X(compile_per_image_s)                                                     \
  X(decode_step_base_s) X(decode_step_per_seq_s) X(kv_bytes_per_token)                            \
  X(load_ram_bytes_per_s) X(load_disk_bytes_per_s) X(transfer_bytes_per_s)

// Added with the pipeline calibration; profiles written before it lack
// them and read as 0 (no pipeline overhead modelled; the factor as 1).
#define MOSAIC_PROFILE_OPTIONAL_FIELDS(X)                                                          \
  X(pipeline_base_s) X(pipeline_per_image_s) X(decode_step_overhead_s)                             \
  X(decode_step_per_context_token_s) X(prefill_per_reused_token_s) X(prefill_pipeline_factor)  \
  X(prefill_node_per_reused_token_s)
// clang-format on

} // namespace

status save_profile(const cost_profile& p, const std::filesystem::path& path) {
  nlohmann::json j;
  j["model"] = p.model;
  j["device"] = p.device;
#define X(f) j[#f] = p.f;
  MOSAIC_PROFILE_FIELDS(X)
  MOSAIC_PROFILE_OPTIONAL_FIELDS(X)
#undef X
  j["provenance"] = p.provenance;
  std::ofstream out{path, std::ios::trunc};
  out << j.dump(2) << "\n";
  out.close();
  if (!out)
    return make_error(errc::io_error, "cannot write the profile ", path.string());
  return {};
}

result<cost_profile> load_profile(const std::filesystem::path& path) {
  std::ifstream in{path};
  if (!in)
    return make_error(errc::not_found, "cannot read the profile ", path.string(),
                      " (write one with `mosaic bench --profile --model M --out FILE`)");
  cost_profile p;
  try {
    const auto j = nlohmann::json::parse(in);
    p.model = j.value("model", "");
    p.device = j.value("device", "");
#define X(f)                                                                                       \
  if (!j.contains(#f))                                                                             \
    return make_error(errc::invalid_argument, path.string(), ": missing field '" #f "'");          \
  j.at(#f).get_to(p.f);
    MOSAIC_PROFILE_FIELDS(X)
#undef X
#define X(f)                                                                                       \
  if (j.contains(#f))                                                                              \
    j.at(#f).get_to(p.f);
    MOSAIC_PROFILE_OPTIONAL_FIELDS(X)
#undef X
    if (j.contains("provenance"))
      j.at("provenance").get_to(p.provenance);
  } catch (const nlohmann::json::exception& e) {
    return make_error(errc::invalid_argument, path.string(), ": not a profile: ", e.what());
  }
  if (p.n_layers < 1 || p.image_tokens < 1 || !(p.load_ram_bytes_per_s > 0) ||
      !(p.load_disk_bytes_per_s > 0) || !(p.transfer_bytes_per_s > 0) ||
      !(p.prefill_pipeline_factor > 0) || p.prefill_node_per_reused_token_s < 0)
    return make_error(
        errc::invalid_argument, path.string(),
        ": n_layers, image_tokens, bandwidths and prefill_pipeline_factor must be > 0, "
        "prefill_node_per_reused_token_s >= 0");
  return p;
}

result<std::vector<double>> fit_linear(const std::vector<std::vector<double>>& x,
                                       std::span<const double> y) {
  if (x.empty() || x.size() != y.size())
    return make_error(errc::invalid_argument, "fit_linear: need as many rows as values");
  const size_t n = x.front().size();
  // Normal equations (XᵀX) c = Xᵀy, solved by Gaussian elimination with
  // partial pivoting; the systems here are 2x2 or 3x3.
  std::vector<std::vector<double>> a(n, std::vector<double>(n + 1, 0.0));
  for (size_t r = 0; r < x.size(); ++r) {
    if (x[r].size() != n)
      return make_error(errc::invalid_argument, "fit_linear: rows of different widths");
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j)
        a[i][j] += x[r][i] * x[r][j];
      a[i][n] += x[r][i] * y[r];
    }
  }
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t r = col + 1; r < n; ++r)
      if (std::abs(a[r][col]) > std::abs(a[pivot][col]))
        pivot = r;
    if (std::abs(a[pivot][col]) < 1e-300)
      return make_error(errc::invalid_argument,
                        "fit_linear: the measurements do not determine every coefficient");
    std::swap(a[col], a[pivot]);
    for (size_t r = 0; r < n; ++r) {
      if (r == col)
        continue;
      const double f = a[r][col] / a[col][col];
      for (size_t k = col; k <= n; ++k)
        a[r][k] -= f * a[col][k];
    }
  }
  std::vector<double> c(n);
  for (size_t i = 0; i < n; ++i)
    c[i] = a[i][n] / a[i][i];
  return c;
}

result<std::vector<double>> fit_costs(const std::vector<std::vector<double>>& x,
                                      std::span<const double> y) {
  if (x.empty() || x.size() != y.size())
    return make_error(errc::invalid_argument, "fit_costs: need as many rows as values");
  const size_t n = x.front().size();
  if (n == 0 || n > 10)
    return make_error(errc::invalid_argument, "fit_costs: between 1 and 10 coefficients");
  for (size_t r = 0; r < x.size(); ++r) {
    if (x[r].size() != n)
      return make_error(errc::invalid_argument, "fit_costs: rows of different widths");
    if (!(y[r] > 0))
      return make_error(errc::invalid_argument, "fit_costs: every timing must be positive");
  }
  std::vector<double> best(n, 0.0);
  double best_err = std::numeric_limits<double>::infinity();
  // Every non-empty subset of columns free, the rest held at 0: the
  // unconstrained fit on the subset, kept where it is non-negative. The
  // constrained optimum is one of these (its positive coefficients solve
  // the least-squares problem restricted to them).
  for (uint32_t mask = 1; mask < (1u << n); ++mask) {
    std::vector<size_t> cols;
    for (size_t i = 0; i < n; ++i)
      if (mask & (1u << i))
        cols.push_back(i);
    std::vector<std::vector<double>> xs;
    std::vector<double> ys;
    for (size_t r = 0; r < x.size(); ++r) {
      std::vector<double> row;
      for (size_t i : cols)
        row.push_back(x[r][i] / y[r]);
      xs.push_back(std::move(row));
      ys.push_back(1.0);
    }
    auto c = fit_linear(xs, ys);
    if (!c || std::any_of(c->begin(), c->end(), [](double v) { return v < 0; }))
      continue;
    std::vector<double> full(n, 0.0);
    for (size_t k = 0; k < cols.size(); ++k)
      full[cols[k]] = (*c)[k];
    double err = 0.0;
    for (size_t r = 0; r < x.size(); ++r) {
      double pred = 0.0;
      for (size_t i = 0; i < n; ++i)
        pred += x[r][i] * full[i];
      err += (pred / y[r] - 1.0) * (pred / y[r] - 1.0);
    }
    if (err < best_err) {
      best_err = err;
      best = std::move(full);
    }
  }
  if (!std::isfinite(best_err))
    return make_error(errc::invalid_argument, "fit_costs: no non-negative costs fit these timings");
  return best;
}

} // namespace mosaic::sim
