// /routes: every listener's route table as the daemon executes it — each
// route's matchers, its weighted clusters, mirrors, timeout and retries —
// for `metanodectl routes`. Also the matcher wording /explain uses.
#pragma once

#include <string>

#include "metanode/xds/snapshot.h"

namespace metanode::core {

// "method exact 'sayHello'", "not tag present", ...
std::string describe(const xds::AttributeMatcher& m);

std::string routes_text(const xds::Snapshot* snap);
std::string routes_json(const xds::Snapshot* snap);

}  // namespace metanode::core
