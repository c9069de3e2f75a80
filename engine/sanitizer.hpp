#pragma once

// Happens-before edges ThreadSanitizer cannot see on its own: hand-offs
// through libraries built without it (libzmq passes a message from the
// thread that sends it to its I/O thread, which later calls the message's
// free function). The thread that hands an object over calls
// tsan_release(obj), the one that takes it calls tsan_acquire(obj).
// Nothing outside a -fsanitize=thread build (scripts/check).

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace mosaic {

inline void tsan_release([[maybe_unused]] const void* addr) noexcept {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(const_cast<void*>(addr));
#endif
}

inline void tsan_acquire([[maybe_unused]] const void* addr) noexcept {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(const_cast<void*>(addr));
#endif
}

} // namespace mosaic
