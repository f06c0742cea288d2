// Tests build a resource set and then change one resource; the pipeline
// holds resources shared and immutable (xds/resources.h). edit() gives the
// test a copy to change and puts it in the resource's place (copy on write),
// so the resources the test started from stay as they were.
#pragma once

#include <memory>

#include "metanode/xds/resources.h"

namespace metanode::xds {

template <class T>
T& edit(Shared<T>& p) {
  auto copy = std::make_shared<T>(*p);
  p = copy;
  return *copy;
}

}  // namespace metanode::xds
