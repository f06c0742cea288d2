// The Apache Dubbo Java peers (tests/peers/dubbo-java) as a command line:
// org.metanode.peers.Provider or .Consumer on a small quick-starting JVM.
// For test targets given METANODE_JAVA and METANODE_DUBBO_JAVA_CP.
#pragma once

#include <string>
#include <vector>

namespace metanode::testbed {

inline std::vector<std::string> java_peer(const std::string& main) {
  return {METANODE_JAVA, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k", "-Xmx192m", "-cp",
          METANODE_DUBBO_JAVA_CP, "org.metanode.peers." + main};
}

}  // namespace metanode::testbed
