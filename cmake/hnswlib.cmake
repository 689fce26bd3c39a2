# hnswlib is a dependency, not vendored code. Its headers come from, in order:
#   1. -DHNSWLIB_INCLUDE_DIR=/path/containing/hnswlib (or the HNSWLIB_INCLUDE_DIR environment variable)
#   2. -DHNSWLIB_SDIST=/path/to/hnswlib-0.8.0.tar.gz (or the HNSWLIB_SDIST environment variable)
#   3. the hnswlib 0.8.0 sdist fetched from the package index by `python -m pip download`
# The sdist is checked against its published SHA-256 before its headers are used.
set(UPPER_FAST_HNSWLIB_VERSION "0.8.0")
set(UPPER_FAST_HNSWLIB_SHA256 "cb6d037eedebb34a7134e7dc78966441dfd04c9cf5ee93911be911ced951c44c")

if(NOT HNSWLIB_INCLUDE_DIR AND DEFINED ENV{HNSWLIB_INCLUDE_DIR})
  set(HNSWLIB_INCLUDE_DIR "$ENV{HNSWLIB_INCLUDE_DIR}")
endif()
if(NOT HNSWLIB_SDIST AND DEFINED ENV{HNSWLIB_SDIST})
  set(HNSWLIB_SDIST "$ENV{HNSWLIB_SDIST}")
endif()

if(NOT HNSWLIB_INCLUDE_DIR)
  set(_hnsw_dir "${CMAKE_BINARY_DIR}/_hnswlib")
  set(_hnsw_tar "${_hnsw_dir}/hnswlib-${UPPER_FAST_HNSWLIB_VERSION}.tar.gz")
  if(HNSWLIB_SDIST)
    set(_hnsw_tar "${HNSWLIB_SDIST}")
  elseif(NOT EXISTS "${_hnsw_tar}")
    find_package(Python 3.10 REQUIRED COMPONENTS Interpreter)
    message(STATUS "upper_fast: fetching the hnswlib ${UPPER_FAST_HNSWLIB_VERSION} sdist with pip download")
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -m pip download --no-deps --no-build-isolation --no-binary hnswlib
              "hnswlib==${UPPER_FAST_HNSWLIB_VERSION}" -d "${_hnsw_dir}"
      RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0 OR NOT EXISTS "${_hnsw_tar}")
      message(FATAL_ERROR "upper_fast: could not fetch the hnswlib ${UPPER_FAST_HNSWLIB_VERSION} sdist (${_err}).\n"
        "Fix: run `pip download --no-deps hnswlib==${UPPER_FAST_HNSWLIB_VERSION}` yourself and pass "
        "HNSWLIB_SDIST=/path/to/hnswlib-${UPPER_FAST_HNSWLIB_VERSION}.tar.gz, or HNSWLIB_INCLUDE_DIR=<dir containing hnswlib/hnswlib.h>.")
    endif()
  endif()
  file(SHA256 "${_hnsw_tar}" _sha)
  if(NOT _sha STREQUAL UPPER_FAST_HNSWLIB_SHA256)
    message(FATAL_ERROR "upper_fast: ${_hnsw_tar} has SHA-256 ${_sha}, expected ${UPPER_FAST_HNSWLIB_SHA256} "
      "(hnswlib ${UPPER_FAST_HNSWLIB_VERSION}). Fix: download the genuine sdist again.")
  endif()
  file(ARCHIVE_EXTRACT INPUT "${_hnsw_tar}" DESTINATION "${_hnsw_dir}/src" PATTERNS "*/hnswlib/*.h")
  set(HNSWLIB_INCLUDE_DIR "${_hnsw_dir}/src/hnswlib-${UPPER_FAST_HNSWLIB_VERSION}")
endif()

if(NOT EXISTS "${HNSWLIB_INCLUDE_DIR}/hnswlib/hnswlib.h")
  message(FATAL_ERROR "upper_fast: ${HNSWLIB_INCLUDE_DIR}/hnswlib/hnswlib.h not found. "
    "Fix: HNSWLIB_INCLUDE_DIR must be the directory that contains hnswlib/hnswlib.h.")
endif()
message(STATUS "upper_fast: hnswlib headers from ${HNSWLIB_INCLUDE_DIR}")
