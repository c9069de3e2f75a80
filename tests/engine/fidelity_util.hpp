#pragma once

// Helpers shared by the HF fidelity tests (hf_fidelity_test.cpp,
// hf_llava_next_test.cpp): error measures, the prompt's ids with each
// image expanded to its slots, a full prefill and a greedy continuation.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <utility>
#include <vector>

#include "engine/llava_engine.hpp"
#include "engine/sampler.hpp"

namespace mosaic::test {

/// max |a - b| / max |b| (1e30 when the sizes differ).
inline double max_rel_error(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size())
    return 1e30;
  double diff = 0.0, mag = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    mag = std::max(mag, std::abs(double(b[i])));
  }
  return diff / mag;
}

/// max |a - b| (1e30 when the sizes differ).
inline double max_abs_error(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size())
    return 1e30;
  double diff = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
  return diff;
}

/// The prompt's ids as HF's processor expands them: each image part as
/// its n_tokens copies of `image_token`.
inline std::vector<int32_t> expanded_ids(const prompt& p, int32_t image_token) {
  std::vector<int32_t> out;
  for (const auto& part : p.parts)
    if (part.kind == segment_kind::text)
      out.insert(out.end(), part.text_ids.begin(), part.text_ids.end());
    else
      out.insert(out.end(), size_t(p.images[size_t(part.image)].n_tokens), image_token);
  return out;
}

/// Plans `p` under `policy` and runs it (failures are test failures).
inline prefill_result prefill_with(llava_engine& engine, const prompt& p, const char* policy) {
  auto pol = parse_policy(policy);
  EXPECT_TRUE(pol) << policy;
  if (!pol)
    return {};
  auto plan = engine.plan(p, *pol);
  EXPECT_TRUE(plan) << plan.err().to_string();
  if (!plan)
    return {};
  auto r = engine.prefill(*plan);
  EXPECT_TRUE(r) << r.err().to_string();
  return r ? std::move(*r) : prefill_result{};
}

/// Greedy tokens after a prefill, at most `n`, stopping after EOS.
inline std::vector<int32_t> greedy_continuation(llava_engine& engine, prefill_result& r, size_t n) {
  std::vector<int32_t> got{argmax(r.logits)};
  while (got.size() < n && got.back() != engine.tokenizer().eos_id()) {
    decode_input in{&r.sequence, got.back(), r.sequence.length() + r.rope_delta};
    auto logits = engine.decode_step(std::span(&in, 1));
    EXPECT_TRUE(logits) << logits.err().to_string();
    if (!logits)
      break;
    got.push_back(argmax(*logits));
  }
  return got;
}

} // namespace mosaic::test
