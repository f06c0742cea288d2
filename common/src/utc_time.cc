#include "metanode/utc_time.h"

#include <cstdio>
#include <ctime>

namespace metanode {

std::string utc_timestamp(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  time_t secs = time_t(ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[64];  // room for any int the compiler imagines, not just real dates
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, int(ms % 1000));
  return buf;
}

}  // namespace metanode
