// The daemon's own log lines: text for a terminal, or one JSON object per
// line for a cluster's log collector (--log-format json).
#pragma once

namespace metanode::core {

// Text: "2026-12-03T10:00:00.123Z info message". JSON:
// {"time":"2026-12-03T10:00:00.123Z","level":"info","msg":"message"}.
// Times are UTC.
void set_log_format(bool json);

}  // namespace metanode::core
