#pragma once

// Workloads modelled on multimodal benchmark data sets (DESIGN.md §9):
// a spec (sim/workloads/*.yaml, read by load_workload_spec) gives the
// shape of the dialogues (turns, images per turn and where they sit,
// question and answer lengths), the image pool and its Zipf popularity,
// and default arrivals; `generate_workload` turns a spec, an arrival
// process and a seed into a reproducible list of requests. Each request
// of a multi-turn dialogue carries the whole history (earlier questions,
// their recorded answers and every image seen so far), as a chat client
// would resend it.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "sim/arrivals.hpp"
#include "sim/random.hpp"

namespace mosaic::sim {

/// Which turns bring new images.
enum class new_images_at : uint8_t { first_turn, every_turn };
/// Where a turn's images sit in its text.
enum class image_placement : uint8_t {
  leading, ///< "Image 1: <image>" lines before the question (MMDU, GQA)
  inline_, ///< inside the question's sentences (Sparkles)
};

struct workload_spec {
  std::string name;
  std::string description;
  std::vector<std::string> sources; ///< papers the numbers come from
  std::string approximations;       ///< where the numbers are estimates

  // -- dialogue shape ---------------------------------------------------------
  length_distribution turns{1.0, 0.0, 1, 1};
  length_distribution images_per_turn{1.0, 0.0, 1, 1};
  new_images_at new_images = new_images_at::every_turn;
  image_placement placement = image_placement::leading;
  int system_words = 0; ///< a fixed system prompt at the start of every request
  length_distribution question_words{10.0, 0.0, 1, 1000};
  length_distribution answer_tokens{16.0, 0.0, 1, 4096}; ///< requested output length

  // -- images -----------------------------------------------------------------
  int image_pool = 64;        ///< distinct images
  double zipf_exponent = 1.0; ///< popularity skew; 0 = uniform
  int image_size = 336;       ///< generated images are size x size pixels

  // -- default arrivals (the command line may override) -------------------------
  arrival_spec arrivals;

  /// Checks every field; errors name the field and the allowed range.
  status validate() const;
};

/// Parses a workload YAML text; errors carry `source:line:` and the fix.
result<workload_spec> parse_workload_spec(std::string_view yaml, std::string_view source);
/// Reads a workload: `name_or_path` is a YAML file, or the name of one in
/// `builtin_dir` ("mmdu" → builtin_dir/mmdu.yaml).
result<workload_spec> load_workload_spec(const std::string& name_or_path,
                                         const std::filesystem::path& builtin_dir);
/// The directory of the workloads shipped with Mosaic: $MOSAIC_SIM_WORKLOADS
/// when set, else the source tree's sim/workloads.
std::filesystem::path builtin_workload_dir();

/// One piece of a prompt: text, or an image of the pool.
struct prompt_piece {
  bool is_image = false;
  std::string text; ///< text pieces
  int image = -1;   ///< image pieces: index into the pool
};

/// One request as the simulator sends it.
struct sim_request {
  uint64_t id = 0;
  double arrival_s = 0.0; ///< scheduled send time from the start of the run
  int dialogue = 0;
  int turn = 0; ///< 0-based
  std::vector<prompt_piece> pieces;
  int max_tokens = 16;
  int text_words = 0; ///< words over all text pieces
  int n_images() const;
  int n_new_images = 0; ///< images first seen in this turn
  /// Prompt tokens as the model counts them (tokenizer, chat template and
  /// image tokens), where known; 0: the DES estimates them from the words.
  int prompt_tokens = 0;
};

/// Caps applied on top of a spec (e.g. to fit a CPU demo); 0 = none.
struct workload_limits {
  int max_turns = 0;
  int max_images_per_request = 0;
  int max_output_tokens = 0;
};

struct workload {
  workload_spec spec;
  uint64_t seed = 0;
  std::vector<sim_request> requests; ///< in arrival order
  /// Pool indices used by at least one request, ascending.
  std::vector<int> used_images() const;
};

/// Generates the requests for `arrivals` (usually spec.arrivals with
/// command-line overrides). Same inputs, same workload.
result<workload> generate_workload(const workload_spec& spec, const arrival_spec& arrivals,
                                   uint64_t seed, const workload_limits& limits = {});

} // namespace mosaic::sim
