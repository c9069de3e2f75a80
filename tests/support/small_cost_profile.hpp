#pragma once

// A small, round-numbered cost profile shared by the simulator tests
// (discrete-event model and FastCache stage model), so that expected
// times can be worked out by hand: prefill 0.01 s + 1 ms per computed
// token, decode step 0.02 s + 5 ms per sequence.

#include "sim/cost_profile.hpp"

namespace mosaic::sim::test_support {

inline cost_profile small_cost_profile() {
  cost_profile c;
  c.model = "builtin:small";
  c.n_layers = 8;
  c.image_tokens = 100;
  c.tokens_per_word = 1.0;
  c.prefill_base_s = 0.01;
  c.prefill_per_computed_token_s = 0.001;
  c.prefill_per_attended_token_s = 0.0;
  c.decode_step_base_s = 0.02;
  c.decode_step_per_seq_s = 0.005;
  return c;
}

} // namespace mosaic::sim::test_support
