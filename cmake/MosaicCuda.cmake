# MOSAIC_CUDA=AUTO builds gpu/ when nvcc is found (CI compiles it even
# without a GPU); ON fails without nvcc; OFF skips it.
set(MOSAIC_HAVE_CUDA OFF)
if(NOT MOSAIC_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc 13's C++20 flag; device code is C++17
    # (headers shared with it stay C++17-clean).
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    # NCCL (GPU-to-GPU KV transfer) is required only with MOSAIC_CUDA=ON;
    # under AUTO a toolkit without it still builds the CUDA code.
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    set(MOSAIC_HAVE_NCCL OFF)
    if(NCCL_LIBRARY AND NCCL_INCLUDE_DIR)
      set(MOSAIC_HAVE_NCCL ON)
    elseif(MOSAIC_CUDA STREQUAL "ON")
      message(FATAL_ERROR "MOSAIC_CUDA=ON but NCCL (libnccl, nccl.h) was not found next to "
                          "CUDA; install it or use -DMOSAIC_CUDA=AUTO")
    endif()
    set(MOSAIC_HAVE_CUDA ON)
    message(STATUS "mosaic: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, sm_80 sm_90; "
                   "NCCL ${MOSAIC_HAVE_NCCL})")
  elseif(MOSAIC_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOSAIC_CUDA=ON but no CUDA compiler was found; install the CUDA toolkit or use -DMOSAIC_CUDA=AUTO")
  else()
    message(STATUS "mosaic: no nvcc found, CUDA backend OFF")
  endif()
endif()
