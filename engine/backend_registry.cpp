// The one place that knows which backends were built (llama.cpp's
// registry): every `#ifdef MOSAIC_WITH_CUDA` of the engine lives here.

#include <string>

#include "engine/backend.hpp"
#include "engine/cpu/cpu_backend.hpp"

#ifdef MOSAIC_WITH_CUDA
#include "gpu/device.hpp"
#endif

namespace mosaic {

result<std::unique_ptr<backend>> make_backend(std::string_view name, int threads) {
  if (name == "cpu")
    return std::unique_ptr<backend>{make_cpu_backend(threads)};
  if (name == "cuda" || name.starts_with("cuda:")) {
#ifdef MOSAIC_WITH_CUDA
    auto count = gpu::device_count();
    if (!count)
      return std::move(count).err();
    if (*count == 0)
      return make_error(errc::unavailable, "backend '", name,
                        "': no CUDA device is visible on this machine; use --backend cpu");
    return make_error(errc::unsupported, "backend '", name,
                      "': the CUDA compute backend is not implemented yet (issue 8); use "
                      "--backend cpu");
#else
    return make_error(errc::unavailable, "backend '", name,
                      "': this build has no CUDA support; rebuild with -DMOSAIC_CUDA=ON");
#endif
  }
  return make_error(errc::invalid_argument, "unknown backend '", name,
                    "'; expected cpu, cuda or cuda:N");
}

} // namespace mosaic
