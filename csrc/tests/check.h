// The native tests' check: CHECK(cond, printf-format, args...) reports a failed condition with its
// file, line and message and counts it in g_failures; a test's main returns nonzero when any failed.
#pragma once

#include <cstdio>

inline int g_failures = 0;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      ++g_failures;                                                        \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
    }                                                                      \
  } while (0)
