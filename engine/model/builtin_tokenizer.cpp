#include <sentencepiece_trainer.h>

#include <mutex>

#include "engine/model/builtin_model_parts.hpp"

namespace mosaic::builtin {

namespace {

// Feeds the in-memory corpus to the trainer.
class corpus_iterator : public sentencepiece::SentenceIterator {
public:
  explicit corpus_iterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

private:
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};

} // namespace

result<std::string> train_tokenizer(const std::vector<std::string>& corpus, int vocab_size) {
  // Llama's tokenizer.model settings: BPE, byte fallback, digits split,
  // no normalisation, whitespace kept, a dummy prefix space.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", "1"}, // determinism
      {"minloglevel", "2"}, // no training chatter on stderr
      {"hard_vocab_limit", "true"},
      {"max_sentencepiece_length", "16"},
  };
  corpus_iterator it(corpus);
  std::string model;
  // SentencePiece's trainer is not safe on two threads at once
  // (ThreadSanitizer saw its option parsing race); one training at a time.
  static std::mutex training;
  std::lock_guard lock{training};
  auto s = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!s.ok())
    return make_error(errc::internal, "training the built-in tokenizer failed: ", s.ToString());
  return model;
}

} // namespace mosaic::builtin
