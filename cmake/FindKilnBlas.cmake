# OpenBLAS's CBLAS: header and library, from Debian's libopenblas-dev (whose alternatives
# symlinks may be missing in a prefix unpacked with dpkg -x, so the real paths are searched
# too). Defines kiln::blas.
find_path(KILN_CBLAS_INCLUDE_DIR cblas.h
          PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread x86_64-linux-gnu/openblas-openmp openblas x86_64-linux-gnu)
find_library(KILN_OPENBLAS_LIBRARY NAMES openblas
             PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread x86_64-linux-gnu/openblas-openmp x86_64-linux-gnu)
if(NOT KILN_CBLAS_INCLUDE_DIR OR NOT KILN_OPENBLAS_LIBRARY)
  message(FATAL_ERROR "kiln: OpenBLAS not found (cblas.h: ${KILN_CBLAS_INCLUDE_DIR}, library: ${KILN_OPENBLAS_LIBRARY}); "
                      "install libopenblas-dev")
endif()
add_library(kiln::blas INTERFACE IMPORTED)
target_include_directories(kiln::blas INTERFACE ${KILN_CBLAS_INCLUDE_DIR})
target_link_libraries(kiln::blas INTERFACE ${KILN_OPENBLAS_LIBRARY})
