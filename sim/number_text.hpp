#pragma once

// Numbers in messages and reports: shortest round-trip-ish text ("%g")
// so that make_error, CSV and SVG can splice them in.

#include <cstdio>
#include <string>

namespace mosaic::sim {

/// `v` as "%.*g" text.
inline std::string num(double v, int digits = 6) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

} // namespace mosaic::sim
