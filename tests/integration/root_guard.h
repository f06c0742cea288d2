// Root-only tests skip loudly when not root, and fail instead of skipping
// under CI (CI=true), where a skipped kernel test would hide a regression.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "testbed.h"

#define METANODE_REQUIRE_ROOT()                                                            \
  do {                                                                                     \
    if (!::metanode::testbed::is_root()) {                                                 \
      const char* ci = std::getenv("CI");                                                  \
      if (ci && std::strcmp(ci, "true") == 0)                                              \
        FAIL() << "root-only test cannot run: CI must run it as root";                     \
      GTEST_SKIP() << "ROOT-ONLY TEST SKIPPED (needs netns, cgroups, BPF): run as root"; \
    }                                                                                      \
  } while (0)
