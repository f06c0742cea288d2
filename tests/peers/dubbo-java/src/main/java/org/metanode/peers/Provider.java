package org.metanode.peers;

import com.example.DemoService;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ProtocolConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.ServiceConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcContext;

/**
 * An Apache Dubbo Java provider (dubbo protocol, Hessian 2, no registry:
 * consumers connect directly), serving what tests/peers/dubbo/provider.js
 * serves, with the same flags and output:
 *
 * <pre>
 *   sayHello(String)       -> "Hello ARG, response from NAME/IP"
 *   sayGoodbye(String)     -> "Goodbye ARG, response from NAME/IP"
 *   echoAttachment(String) -> the request attachment named ARG, or "&lt;absent&gt;"
 * </pre>
 *
 * Prints "listening HOST:PORT as NAME" once exported and "call METHOD" for
 * every call it serves. SIGTERM runs Dubbo's own graceful shutdown, which
 * tells connected consumers the provider is going read-only.
 */
public final class Provider {
  private Provider() {}

  static final class Impl implements DemoService {
    private final String who;
    private final int delayMs;

    Impl(String who, int delayMs) {
      this.who = who;
      this.delayMs = delayMs;
    }

    private static void served(String method) {
      System.out.println("call " + method);
      System.out.flush();
    }

    @Override
    public String sayHello(String name) {
      served("sayHello");
      if (delayMs > 0) {
        try {
          Thread.sleep(delayMs);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
      }
      return "Hello " + name + ", response from " + who;
    }

    @Override
    public String sayGoodbye(String name) {
      served("sayGoodbye");
      return "Goodbye " + name + ", response from " + who;
    }

    @Override
    public String echoAttachment(String key) {
      served("echoAttachment");
      Object v = RpcContext.getServerAttachment().getObjectAttachment(key);
      if (v == null) return "<absent>";
      String s = String.valueOf(v);
      return s.isEmpty() ? "<empty>" : s;
    }
  }

  public static void main(String[] argv) {
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    Loopback.pin();
    Flags f = new Flags(argv, "Provider --port P --name NAME [--ip IP] [--host H] [--version V] [--group G] "
        + "[--delay-ms N]");
    f.only("--port", "--name", "--ip", "--host", "--version", "--group", "--delay-ms");
    int port = f.integer("--port", 0);
    String name = f.get("--name", null);
    if (port <= 0 || port > 65535) f.fail("--port is required");
    if (name == null) f.fail("--name is required");
    String host = f.get("--host", "127.0.0.1");
    String ip = f.get("--ip", host);

    ApplicationConfig app = new ApplicationConfig("metanode-peer-" + name);
    app.setQosEnable(false);
    ProtocolConfig protocol = new ProtocolConfig("dubbo", port);
    protocol.setHost(host);
    // Hessian 2 on the wire, the serialization metanode decodes; Dubbo 3.2
    // would otherwise offer fastjson2 first.
    protocol.setSerialization("hessian2");
    protocol.setPreferSerialization("hessian2");
    ServiceConfig<DemoService> service = new ServiceConfig<>();
    service.setInterface(DemoService.class);
    service.setRef(new Impl(name + "/" + ip, f.integer("--delay-ms", 0)));
    service.setVersion(f.get("--version", "1.0.0"));
    String group = f.get("--group", "");
    if (!group.isEmpty()) service.setGroup(group);

    DubboBootstrap boot = DubboBootstrap.getInstance()
        .application(app)
        .registry(new RegistryConfig(RegistryConfig.NO_AVAILABLE))
        .protocol(protocol)
        .service(service);
    boot.start();
    System.out.println("listening " + host + ":" + port + " as " + name);
    System.out.flush();
    boot.await();
  }
}
