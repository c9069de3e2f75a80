#pragma once

// A small in-test generation_service: it answers every request with a
// fixed list of token pieces (or a scripted error), keeps uploads in a
// per-tenant map, and records what it was asked — so that the HTTP front
// door can be tested without a model.

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "server/generation_service.hpp"
#include "server/request_convert.hpp"

namespace mosaic::server::test {

class scripted_stream final : public generation_stream {
public:
  scripted_stream(std::deque<wire::token_event> events, std::chrono::milliseconds gap,
                  std::atomic<int>& cancels, std::atomic<int>& taken)
    : events_(std::move(events)), gap_(gap), cancels_(cancels), taken_(taken) {}

  /// Each event is due `gap` after the previous one was taken; a caller
  /// that polls (timeout 0) sees it once it is due.
  std::optional<wire::token_event> next(std::chrono::milliseconds timeout) override {
    if (events_.empty() || cancelled_) {
      std::this_thread::sleep_for(std::min(timeout, std::chrono::milliseconds{5}));
      if (cancelled_ && !ended_) {
        ended_ = true;
        wire::token_event ev;
        ev.finish = msg::FinishReason::cancelled;
        return ev;
      }
      return std::nullopt;
    }
    const auto now = std::chrono::steady_clock::now();
    if (due_ - now > timeout) {
      std::this_thread::sleep_for(timeout);
      return std::nullopt;
    }
    std::this_thread::sleep_until(due_);
    auto ev = events_.front();
    events_.pop_front();
    due_ = std::chrono::steady_clock::now() + gap_;
    ++taken_;
    if (ev.finish != msg::FinishReason::none)
      ended_ = true;
    return ev;
  }
  void cancel() override {
    if (!cancelled_.exchange(true) && !ended_)
      ++cancels_;
  }

private:
  std::deque<wire::token_event> events_;
  std::chrono::milliseconds gap_;
  std::chrono::steady_clock::time_point due_ = std::chrono::steady_clock::now() + gap_;
  std::atomic<int>& cancels_;
  std::atomic<int>& taken_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> ended_{false};
};

class scripted_service final : public generation_service {
public:
  msg::FinishReason finish = msg::FinishReason::stop;
  /// The text pieces of each answer (a request reads them under the lock).
  void set_pieces(std::vector<std::string> p) {
    std::lock_guard lock{mutex_};
    pieces_ = std::move(p);
  }
  /// From now on every request ends with `e`.
  void set_fail_with(error e) {
    std::lock_guard lock{mutex_};
    fail_with_ = std::move(e);
  }
  // Set by a test while the server runs; read by the server's threads,
  // which the request reaches through a socket (an edge ThreadSanitizer
  // cannot see): atomics.
  std::atomic<std::chrono::milliseconds> gap{std::chrono::milliseconds{0}}; ///< between events
  std::atomic<bool> never_finish{false}; ///< tokens forever (until cancelled)
  std::atomic<int> cancels{0};
  std::atomic<int> events_taken{0}; ///< by the front door, every stream together

  service_info info() const override { return {"builtin:tiny", 512, 16, 1700000000, {}}; }

  std::shared_ptr<generation_stream> submit(const wire::generate_request& r) override {
    std::vector<std::string> pieces;
    error fail_with;
    {
      std::lock_guard lock{mutex_};
      requests_.push_back(r);
      pieces = pieces_;
      fail_with = fail_with_;
    }
    std::deque<wire::token_event> evs;
    wire::token_event last;
    if (fail_with.code != errc::none) {
      last.finish = msg::FinishReason::error;
      last.err = fail_with;
      evs.push_back(last);
      return std::make_shared<scripted_stream>(evs, gap, cancels, events_taken);
    }
    for (auto* seg = r.segments.data(); seg != r.segments.data() + r.segments.size(); ++seg)
      if (auto* k = std::get_if<wire::image_key_segment>(seg)) {
        std::lock_guard lock{mutex_};
        if (!stored_.count({r.tenant, key_to_hex(k->key)})) {
          last.finish = msg::FinishReason::error;
          last.err = make_error(errc::not_found, "image not in the library");
          evs.push_back(last);
          return std::make_shared<scripted_stream>(evs, gap, cancels, events_taken);
        }
      }
    const size_t n = never_finish ? 100000 : pieces.size();
    for (size_t i = 0; i < n; ++i) {
      wire::token_event ev;
      ev.index = uint32_t(i);
      ev.token_id = int32_t(100 + i);
      ev.text = pieces[i % pieces.size()];
      evs.push_back(ev);
    }
    last.finish = finish;
    last.usage = msg::Usage{7, uint32_t(pieces.size()), 3, 1, 2};
    evs.push_back(last);
    return std::make_shared<scripted_stream>(evs, gap, cancels, events_taken);
  }

  result<stored_image> upload(std::string_view tenant, std::span<const uint8_t> image,
                              std::chrono::milliseconds) override {
    library_key_bytes key{};
    for (size_t i = 0; i < image.size(); ++i)
      key[i % key.size()] = uint8_t(key[i % key.size()] * 31 + image[i]);
    std::lock_guard lock{mutex_};
    stored_.insert({std::string{tenant}, key_to_hex(key)});
    return stored_image{key_to_hex(key), 16};
  }

  status remove(std::string_view tenant, const library_key_bytes& key) override {
    std::lock_guard lock{mutex_};
    if (stored_.erase({std::string{tenant}, key_to_hex(key)}) == 0)
      return make_error(errc::not_found, "no such image");
    return {};
  }

  service_stats stats() const override {
    service_stats s;
    s.prefix_queries = 4;
    s.prefix_hits = 3;
    s.ram_hits = 2;
    s.disk_hits = 1;
    s.disk_misses = 1;
    s.kv_cache_usage = 0.25;
    return s;
  }

  std::vector<wire::generate_request> requests() const {
    std::lock_guard lock{mutex_};
    return requests_;
  }

private:
  std::vector<std::string> pieces_{"Hello", " there", "!"};
  error fail_with_{};
  mutable std::mutex mutex_;
  std::vector<wire::generate_request> requests_;
  std::set<std::pair<std::string, std::string>> stored_;
};

} // namespace mosaic::server::test
