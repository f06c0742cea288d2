package org.metanode.peers;

import java.lang.reflect.Field;
import java.net.InetAddress;
import org.apache.dubbo.common.utils.NetUtils;

/**
 * Keeps a test peer's traffic on loopback. Dubbo treats every 127.x address
 * as "no address" and puts the machine's first interface address in its
 * place: a consumer told dubbo://127.0.0.1:P would connect to that address
 * instead, and a provider would advertise it. Setting Dubbo's cached local
 * address to 127.0.0.1 makes that substitution a no-op. (A provider still
 * listens on every interface: Dubbo 3.2 binds 0.0.0.0 for a loopback host.)
 */
final class Loopback {
  private Loopback() {}

  static void pin() {
    try {
      set("LOCAL_ADDRESS", InetAddress.getByName("127.0.0.1"));
      set("HOST_ADDRESS", "127.0.0.1");
    } catch (ReflectiveOperationException | java.net.UnknownHostException e) {
      throw new IllegalStateException("cannot keep Dubbo on loopback: " + e, e);
    }
  }

  private static void set(String field, Object value) throws ReflectiveOperationException {
    Field f = NetUtils.class.getDeclaredField(field);
    f.setAccessible(true);
    f.set(null, value);
  }
}
