#pragma once

// In-process registry of bulk objects (encoder outputs, loaded library
// entries, KV sequences, prefill jobs) keyed by 64-bit handles. Actor
// messages carry the handle (TensorHandle::id, KvHandle::sequence); the
// bytes stay here. Objects are held by shared_ptr so that a reader keeps
// its object alive after another party `take`s the handle.
//
// Thread-safe (one mutex); handles are never reused within a table.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace mosaic::actors {

/// The error message for a request id already in use on this node.
inline std::string id_in_use(uint64_t id) {
  return "request id " + std::to_string(id) + " is already in use on this node; refused";
}

template <class T>
class handle_table {
public:
  /// Stores `value` under a fresh handle (> 0) and returns the handle.
  uint64_t put(std::shared_ptr<T> value) {
    std::lock_guard lock{mutex_};
    const uint64_t id = next_++;
    items_.emplace(id, std::move(value));
    return id;
  }

  /// Stores `value` under `id` (a request id); false, storing nothing,
  /// when `id` is taken: one request must never run another's entry.
  [[nodiscard]] bool put_at(uint64_t id, std::shared_ptr<T> value) {
    std::lock_guard lock{mutex_};
    return items_.try_emplace(id, std::move(value)).second;
  }

  /// The object behind `id`, or null.
  std::shared_ptr<T> get(uint64_t id) const {
    std::lock_guard lock{mutex_};
    auto it = items_.find(id);
    return it == items_.end() ? nullptr : it->second;
  }

  /// Removes and returns the object behind `id` (null when absent).
  std::shared_ptr<T> take(uint64_t id) {
    std::lock_guard lock{mutex_};
    auto it = items_.find(id);
    if (it == items_.end())
      return nullptr;
    auto out = std::move(it->second);
    items_.erase(it);
    return out;
  }

  size_t size() const {
    std::lock_guard lock{mutex_};
    return items_.size();
  }

private:
  mutable std::mutex mutex_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<T>> items_;
};

} // namespace mosaic::actors
