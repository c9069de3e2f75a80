#include "actors/openssl_error_queue.hpp"

// Works around a bug of CAF 0.17.6's OpenSSL module (libcaf_openssl,
// src/openssl/session.cpp): it calls SSL_read / SSL_write / SSL_connect /
// SSL_accept without clearing the thread's OpenSSL error queue first, and
// reads the result with SSL_get_error, which OpenSSL documents as
// unreliable unless the queue was empty before the call. When one TLS
// connection fails (a peer killed: "unexpected eof while reading" stays in
// the queue, as CAF drains it only when its logging is on), the next
// would-block read on any other connection of the same multiplexer thread
// is taken for an error and that healthy connection is closed: killing
// one node dropped the control connections between the others.
//
// The four functions are defined here, in the executable, which the
// dynamic linker resolves libcaf_openssl's calls to; each clears the
// queue and calls OpenSSL's own (dlsym RTLD_NEXT). For every other caller
// that is what OpenSSL asks of it anyway.

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

/// OpenSSL's own `name` (the next definition after this executable's).
template <class F>
F next(const char* name) {
  static_assert(sizeof(F) == sizeof(void*));
  void* f = dlsym(RTLD_NEXT, name);
  if (f == nullptr) { // libssl not loaded: RTLD_DEFAULT would find this wrapper again
    std::fprintf(stderr, "mosaic: %s not found in libssl\n", name);
    std::abort();
  }
  F out;
  __builtin_memcpy(&out, &f, sizeof(out));
  return out;
}

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = next<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = next<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_connect(SSL* ssl) {
  static const auto real = next<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

int SSL_accept(SSL* ssl) {
  static const auto real = next<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

} // extern "C"

namespace mosaic::actors {

bool openssl_error_queue_cleared_per_call() {
  // The executable's SSL_read is the one libcaf_openssl calls when the
  // dynamic linker resolves it here first.
  return dlsym(RTLD_DEFAULT, "SSL_read") == reinterpret_cast<void*>(&SSL_read);
}

} // namespace mosaic::actors
