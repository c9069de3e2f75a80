#include "sim/workload.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <set>

#include "sim/number_text.hpp"

namespace mosaic::sim {

namespace {

// Plain English words for synthetic questions and answers: the built-in
// tokenizer splits most of them into one or two pieces.
constexpr std::array<std::string_view, 64> words = {
    "the",     "image",   "shows",  "a",      "red",      "house",   "near",  "river",
    "what",    "is",      "on",     "left",   "of",       "blue",    "car",   "and",
    "how",     "many",    "people", "are",    "in",       "picture", "which", "color",
    "does",    "tree",    "have",   "right",  "side",     "small",   "large", "dog",
    "compare", "these",   "two",    "scenes", "describe", "detail",  "where", "light",
    "window",  "street",  "sky",    "green",  "field",    "under",   "table", "white",
    "cat",     "sitting", "behind", "wall",   "bridge",   "over",    "water", "boat",
    "first",   "second",  "third",  "photo",  "with",     "there",   "it",    "this"};

status check(const length_distribution& d, std::string_view field, int lo, int hi) {
  if (!(d.mean >= lo && d.mean <= hi) || d.stddev < 0.0 || d.min < lo || d.max > hi ||
      d.min > d.max)
    return make_error(errc::invalid_argument, field, ": need ", num(lo),
                      " <= min <= mean <= max <= ", num(hi), " and std >= 0 (got mean ",
                      num(d.mean), ", std ", num(d.stddev), ", min ", num(d.min), ", max ",
                      num(d.max), ")");
  return {};
}

std::string random_words(rng& r, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (i > 0)
      out += ' ';
    out += words[size_t(r.uniform_int(0, int64_t(words.size()) - 1))];
  }
  return out;
}

/// Draws `n` distinct pool images by popularity (distinct while the pool allows).
std::vector<int> draw_images(rng& r, const zipf_sampler& zipf, int n,
                             const std::vector<int>& already) {
  std::set<int> taken(already.begin(), already.end());
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    int img = zipf.sample(r);
    for (int tries = 0; taken.count(img) != 0 && tries < 64; ++tries)
      img = zipf.sample(r);
    taken.insert(img);
    out.push_back(img);
  }
  return out;
}

} // namespace

status workload_spec::validate() const {
  if (name.empty())
    return make_error(errc::invalid_argument, "workload: 'name' is empty");
  MOSAIC_TRY(check(turns, "dialogue.turns", 1, 1000));
  MOSAIC_TRY(check(images_per_turn, "dialogue.images_per_turn", 0, 64));
  MOSAIC_TRY(check(question_words, "dialogue.question_words", 1, 100000));
  MOSAIC_TRY(check(answer_tokens, "dialogue.answer_tokens", 1, 100000));
  if (system_words < 0 || system_words > 10000)
    return make_error(errc::invalid_argument, "dialogue.system_words must be in 0..10000");
  if (image_pool < 1 || image_pool > 1000000)
    return make_error(errc::invalid_argument, "images.pool must be in 1..1000000");
  if (!(zipf_exponent >= 0.0 && zipf_exponent <= 10.0))
    return make_error(errc::invalid_argument, "images.zipf_exponent must be in 0..10");
  if (image_size < 16 || image_size > 4096)
    return make_error(errc::invalid_argument, "images.size must be in 16..4096 pixels");
  return arrivals.validate();
}

int sim_request::n_images() const {
  return int(std::count_if(pieces.begin(), pieces.end(), [](const auto& p) { return p.is_image; }));
}

std::vector<int> workload::used_images() const {
  std::set<int> s;
  for (const auto& r : requests)
    for (const auto& p : r.pieces)
      if (p.is_image)
        s.insert(p.image);
  return {s.begin(), s.end()};
}

std::filesystem::path builtin_workload_dir() {
  if (const char* env = std::getenv("MOSAIC_SIM_WORKLOADS"); env != nullptr && *env != '\0')
    return env;
  return MOSAIC_SIM_WORKLOAD_DIR;
}

result<workload> generate_workload(const workload_spec& spec, const arrival_spec& arrivals,
                                   uint64_t seed, const workload_limits& limits) {
  MOSAIC_TRY(spec.validate());
  auto times = arrival_times(arrivals, seed);
  if (!times)
    return std::move(times).err();

  workload w;
  w.spec = spec;
  w.seed = seed;
  rng r{seed};
  const zipf_sampler zipf{spec.image_pool, spec.zipf_exponent};
  const std::string system = random_words(r, spec.system_words);

  size_t next = 0;
  for (int dialogue = 0; next < times->size(); ++dialogue) {
    int n_turns = spec.turns.sample(r);
    if (limits.max_turns > 0)
      n_turns = std::min(n_turns, limits.max_turns);
    std::vector<prompt_piece> history;
    if (!system.empty())
      history.push_back({false, system + "\n", -1});
    std::vector<int> seen;
    for (int turn = 0; turn < n_turns && next < times->size(); ++turn) {
      int n_new = 0;
      if (turn == 0 || spec.new_images == new_images_at::every_turn)
        n_new = spec.images_per_turn.sample(r);
      if (limits.max_images_per_request > 0)
        n_new = std::clamp(limits.max_images_per_request - int(seen.size()), 0, n_new);
      const auto fresh = draw_images(r, zipf, n_new, seen);
      const int q_words = spec.question_words.sample(r);

      std::vector<prompt_piece> turn_pieces;
      if (spec.placement == image_placement::leading || fresh.empty()) {
        for (size_t i = 0; i < fresh.size(); ++i) {
          turn_pieces.push_back({false, "Image " + std::to_string(seen.size() + i + 1) + ": ", -1});
          turn_pieces.push_back({true, {}, fresh[i]});
          turn_pieces.push_back({false, "\n", -1});
        }
        turn_pieces.push_back({false, random_words(r, q_words), -1});
      } else {
        // Images inside the sentence: the words are cut at random points.
        std::vector<int> cuts;
        for (size_t i = 0; i < fresh.size(); ++i)
          cuts.push_back(int(r.uniform_int(1, std::max(1, q_words - 1))));
        std::sort(cuts.begin(), cuts.end());
        int done = 0;
        for (size_t i = 0; i < fresh.size(); ++i) {
          const int n = std::max(cuts[i] - done, 0);
          turn_pieces.push_back({false, random_words(r, n) + " ", -1});
          turn_pieces.push_back({true, {}, fresh[i]});
          done += n;
        }
        turn_pieces.push_back({false, " " + random_words(r, std::max(q_words - done, 1)), -1});
      }
      seen.insert(seen.end(), fresh.begin(), fresh.end());

      int answer = spec.answer_tokens.sample(r);
      if (limits.max_output_tokens > 0)
        answer = std::min(answer, limits.max_output_tokens);

      sim_request req;
      req.id = next;
      req.arrival_s = (*times)[next];
      req.dialogue = dialogue;
      req.turn = turn;
      req.pieces = history;
      req.pieces.push_back({false, "USER: ", -1});
      req.pieces.insert(req.pieces.end(), turn_pieces.begin(), turn_pieces.end());
      req.pieces.push_back({false, "\nASSISTANT:", -1});
      req.max_tokens = answer;
      req.n_new_images = int(fresh.size());
      for (const auto& p : req.pieces)
        if (!p.is_image && !p.text.empty())
          req.text_words += int(std::count(p.text.begin(), p.text.end(), ' ')) + 1;
      w.requests.push_back(req);
      ++next;

      // The next turn resends this one with a recorded answer of the
      // requested length (as multi-turn benchmark replays do).
      history = std::move(req.pieces);
      history.push_back({false, " " + random_words(r, answer) + "\n", -1});
    }
  }
  return w;
}

} // namespace mosaic::sim
