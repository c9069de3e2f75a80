#pragma once

// Internals of the built-in model generator, shared by its .cpp files (not
// part of mosaic_model's public interface).

#include <cstdint>
#include <string>
#include <vector>

#include "engine/error.hpp"

namespace mosaic::builtin {

/// splitmix64: a tiny, portable, fully specified PRNG (std::normal_distribution
/// is implementation-defined, so it cannot give byte-identical models).
class splitmix64 {
public:
  explicit splitmix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return next() % n; }
  /// Standard normal (Box-Muller; one of the pair is used).
  double normal();

private:
  uint64_t state_;
};

/// A deterministic English-like corpus (image descriptions, questions and
/// answers) for training the built-in tokenizer; `n_sentences` lines.
std::vector<std::string> training_corpus(uint64_t seed, int n_sentences);

/// Trains a Llama-style SentencePiece BPE model (byte fallback, digits
/// split, identity normalisation, unk=0, bos=1, eos=2) of exactly
/// `vocab_size` pieces on `corpus`, single-threaded; returns the
/// serialized model (the bytes of tokenizer.model).
result<std::string> train_tokenizer(const std::vector<std::string>& corpus, int vocab_size);

/// Trains a byte-level BPE on `corpus` and returns a tokenizer.json in
/// Qwen2's layout: the 256 byte symbols (ids 0..255, byte order), then
/// exactly `n_merges` merged tokens, then `specials` as added special
/// tokens; a corpus too small for that many → invalid_argument.
result<std::string> train_byte_bpe_json(const std::vector<std::string>& corpus, int n_merges,
                                        const std::vector<std::string>& specials);

} // namespace mosaic::builtin
