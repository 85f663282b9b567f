# Finds cuDNN's header and library: beside the CUDA toolkit, under KILN_CUDNN_ROOT, or in a
# Python `nvidia-cudnn` package (the lent GPU machine has it inside PyTorch's install).
# Defines kiln::cudnn, KILN_CUDNN_FOUND and KILN_CUDNN_VERSION.
set(_kiln_cudnn_hints ${KILN_CUDNN_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR})
find_path(KILN_CUDNN_INCLUDE_DIR cudnn_version.h HINTS ${_kiln_cudnn_hints} ${CUDAToolkit_INCLUDE_DIRS}
          PATH_SUFFIXES include)
find_library(KILN_CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${_kiln_cudnn_hints} ${CUDAToolkit_LIBRARY_DIR}
             PATH_SUFFIXES lib lib64 lib/x64)
set(KILN_CUDNN_FOUND OFF)
if(KILN_CUDNN_INCLUDE_DIR AND KILN_CUDNN_LIBRARY)
  file(READ ${KILN_CUDNN_INCLUDE_DIR}/cudnn_version.h _kiln_cudnn_h)
  string(REGEX MATCH "define CUDNN_MAJOR ([0-9]+)" _ "${_kiln_cudnn_h}")
  set(_major ${CMAKE_MATCH_1})
  string(REGEX MATCH "define CUDNN_MINOR ([0-9]+)" _ "${_kiln_cudnn_h}")
  set(_minor ${CMAKE_MATCH_1})
  string(REGEX MATCH "define CUDNN_PATCHLEVEL ([0-9]+)" _ "${_kiln_cudnn_h}")
  set(_patch ${CMAKE_MATCH_1})
  set(KILN_CUDNN_VERSION "${_major}.${_minor}.${_patch}")
  if(_major GREATER_EQUAL 9)
    set(KILN_CUDNN_FOUND ON)
    add_library(kiln::cudnn INTERFACE IMPORTED)
    target_include_directories(kiln::cudnn INTERFACE ${KILN_CUDNN_INCLUDE_DIR})
    target_link_libraries(kiln::cudnn INTERFACE ${KILN_CUDNN_LIBRARY})
  else()
    message(STATUS "kiln: cuDNN ${KILN_CUDNN_VERSION} at ${KILN_CUDNN_INCLUDE_DIR} is older than 9")
  endif()
endif()
