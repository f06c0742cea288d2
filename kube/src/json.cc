// Boost.JSON is used header-only: its implementation is compiled once, here,
// instead of linking a library Debian ships in a separate package.
#include <boost/json/src.hpp>
