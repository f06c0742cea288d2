// Timestamps as logs and dumps print them: RFC 3339 in UTC with
// milliseconds, e.g. "2026-12-03T10:00:00.123Z".
#pragma once

#include <chrono>
#include <string>

namespace metanode {

std::string utc_timestamp(std::chrono::system_clock::time_point t);

}  // namespace metanode
