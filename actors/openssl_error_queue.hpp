#pragma once

// The workaround for CAF 0.17.6's OpenSSL module reading a stale OpenSSL
// error queue (openssl_error_queue.cpp). Calling this links it in; true
// when libcaf_openssl's SSL calls resolve to it.

namespace mosaic::actors {

bool openssl_error_queue_cleared_per_call();

} // namespace mosaic::actors
