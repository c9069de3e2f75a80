#pragma once

// The prompts quality_bench runs: the built-in fixed prompt set (procedural
// images, no reference answers; for random-weight models) or a held-out
// visual QA set written by tools/train/export_heldout.py (a directory with
// heldout.jsonl and PNG images, each question with its one-word answer).

#include <filesystem>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "engine/model/image.hpp"

namespace mosaic::bench {

/// One prompt of the benchmark.
struct quality_case {
  std::string user;                  ///< the user turn, one "<image>" per image
  std::vector<decoded_image> images; ///< in marker order
  std::string answer;                ///< expected answer; empty: none (no accuracy)
  std::string kind;                  ///< question kind (VQA set), for per-kind accuracy
};

/// Four fixed prompts with 2-3 procedurally drawn `image_size`² images each,
/// the images inside the text (never a prefix).
std::vector<quality_case> builtin_cases(int image_size);

/// Reads `dir`/heldout.jsonl ({"user", "images", "answer", "kind"} per
/// line; image paths relative to `dir`), at most `limit` questions (0: all).
/// A missing file, bad line or undecodable image is an error naming it.
result<std::vector<quality_case>> load_vqa_cases(const std::filesystem::path& dir, int limit);

} // namespace mosaic::bench
