// Errors as values for the data path and OS calls: no exceptions cross a
// component boundary once the daemon is running.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace metanode {

struct Error {
  std::error_code code;
  std::string context;  // what we were doing, e.g. "attach connect4 to /sys/fs/cgroup/x"

  std::string message() const {
    if (!code) return context;
    return context + ": " + code.message();
  }
  static Error errno_error(std::string ctx, int err = errno) {
    return Error{std::error_code(err, std::system_category()), std::move(ctx)};
  }
  // A complete, human-readable explanation (no OS error code to append).
  static Error invalid(std::string ctx) { return Error{std::error_code(), std::move(ctx)}; }
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}             // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}         // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), failed_(true) {}  // NOLINT
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool failed_ = false;
};

inline Result<void> Ok() { return {}; }

}  // namespace metanode
