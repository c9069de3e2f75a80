#pragma once

// Errors as values for the engine and kv layers. These layers do not link
// CAF; actors convert `mosaic::error` to `caf::error` at their boundary
// (messages/ registers the same codes with CAF).

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace mosaic {

/// Error categories shared by every layer. Values are stable: they cross
/// processes inside FlatBuffers messages.
enum class errc : uint8_t {
  none = 0,
  invalid_argument = 1,   ///< caller gave bad input (HTTP 400)
  not_found = 2,          ///< a named thing does not exist (HTTP 404)
  io_error = 3,           ///< the OS refused a read/write
  corrupt_data = 4,       ///< a file or buffer failed a check
  out_of_memory = 5,      ///< a pool or budget is exhausted
  unsupported = 6,        ///< valid but not implemented for this input
  overloaded = 7,         ///< queues full past the deadline (HTTP 503)
  timeout = 8,            ///< a deadline passed
  cancelled = 9,          ///< the client went away
  permission_denied = 10, ///< tenant or key may not do this (HTTP 403)
  internal = 11,          ///< a broken invariant inside Mosaic
  unavailable = 12,       ///< a peer or device is not there
  no_space = 13,          ///< a disk or quota is full (HTTP 507)
};

/// Human-readable name of an error code ("corrupt_data").
const char* to_string(errc code) noexcept;

/// An error code plus a message that tells the user what went wrong and,
/// where possible, how to fix it.
struct error {
  errc code = errc::none;
  std::string message;

  /// "corrupt_data: <message>"
  std::string to_string() const;
};

/// Makes an error; `make_error(errc::not_found, "no tensor ", name)`.
template <class... Ts>
error make_error(errc code, Ts&&... parts) {
  std::string msg;
  (msg.append(std::string_view{parts}), ...);
  return error{code, std::move(msg)};
}

/// Either a T or an error (std::expected is C++23; this is the subset we
/// use). Accessing the wrong alternative is a broken invariant and aborts.
template <class T>
class [[nodiscard]] result {
public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  result(error err) : v_(std::in_place_index<1>, std::move(err)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const error& err() const& { return std::get<1>(v_); }
  error&& err() && { return std::get<1>(std::move(v_)); }

private:
  std::variant<T, error> v_;
};

/// Success or an error.
template <>
class [[nodiscard]] result<void> {
public:
  result() = default;
  result(error err) : err_(std::move(err)) {}

  bool has_value() const noexcept { return err_.code == errc::none; }
  explicit operator bool() const noexcept { return has_value(); }
  const error& err() const& { return err_; }
  error&& err() && { return std::move(err_); }

private:
  error err_;
};

using status = result<void>;

} // namespace mosaic

/// Returns the error of `expr` (a result) from the enclosing function.
#define MOSAIC_TRY(expr)                                                      \
  do {                                                                        \
    if (auto mosaic_try_r_ = (expr); !mosaic_try_r_)                          \
      return std::move(mosaic_try_r_).err();                                  \
  } while (false)
