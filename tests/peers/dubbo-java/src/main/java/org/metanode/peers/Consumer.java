package org.metanode.peers;

import com.example.DemoService;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.dubbo.config.ApplicationConfig;
import org.apache.dubbo.config.ReferenceConfig;
import org.apache.dubbo.config.RegistryConfig;
import org.apache.dubbo.config.bootstrap.DubboBootstrap;
import org.apache.dubbo.rpc.RpcContext;

/**
 * An Apache Dubbo Java consumer over one connection to --host:--port (a
 * direct URL, no registry), with the flags and the SUMMARY line of
 * tests/peers/dubbo/consumer_common.js. Dubbo's own retries are off, so
 * every failure is reported.
 */
public final class Consumer {
  private Consumer() {}

  private static final Pattern SERVER = Pattern.compile("response from ([^/]+)/");

  public static void main(String[] argv) throws Exception {
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    Loopback.pin();
    Flags f = new Flags(argv, "Consumer --host H --port P [--calls N] [--method M|alternate] [--arg A] "
        + "[--attach K=V]... [--version V] [--group G] [--timeout MS] [--interval S] [--quiet]", "--quiet");
    f.only("--host", "--port", "--calls", "--method", "--arg", "--name", "--attach", "--version", "--group",
        "--timeout", "--interval", "--quiet");
    String host = f.get("--host", null);
    int port = f.integer("--port", 0);
    if (host == null) f.fail("--host is required");
    if (port <= 0 || port > 65535) f.fail("--port is required");
    int calls = f.integer("--calls", 10);
    String method = f.get("--method", "sayHello");
    String arg = f.get("--arg", f.get("--name", "metanode"));
    double interval = Double.parseDouble(f.get("--interval", "0"));
    boolean quiet = f.on("--quiet");
    Map<String, String> attach = new LinkedHashMap<>();
    for (String kv : f.all("--attach")) {
      int eq = kv.indexOf('=');
      if (eq <= 0) f.fail("--attach wants k=v, got " + kv);
      attach.put(kv.substring(0, eq), kv.substring(eq + 1));
    }

    ApplicationConfig app = new ApplicationConfig("metanode-peer-consumer");
    app.setQosEnable(false);
    ReferenceConfig<DemoService> ref = new ReferenceConfig<>();
    ref.setInterface(DemoService.class);
    ref.setUrl("dubbo://" + host + ":" + port + "?serialization=hessian2&prefer.serialization=hessian2");
    ref.setVersion(f.get("--version", "1.0.0"));
    String group = f.get("--group", "");
    if (!group.isEmpty()) ref.setGroup(group);
    ref.setTimeout(f.integer("--timeout", 3000));
    ref.setRetries(0);
    DubboBootstrap.getInstance()
        .application(app)
        .registry(new RegistryConfig(RegistryConfig.NO_AVAILABLE))
        .reference(ref)
        .start();
    DemoService svc = ref.get();

    int ok = 0, errors = 0, switches = 0;
    Map<String, Integer> byServer = new TreeMap<>(), byMethodServer = new TreeMap<>();
    List<String> errorMessages = new ArrayList<>(), replies = new ArrayList<>();
    String last = null;
    for (int i = 0; i < calls; i++) {
      String m = method.equals("alternate") ? (i % 2 == 0 ? "sayHello" : "sayGoodbye") : method;
      attach.forEach((k, v) -> RpcContext.getClientAttachment().setAttachment(k, v));
      try {
        String text = switch (m) {
          case "sayHello" -> svc.sayHello(arg);
          case "sayGoodbye" -> svc.sayGoodbye(arg);
          case "echoAttachment" -> svc.echoAttachment(arg);
          default -> throw new IllegalArgumentException("no method " + m + " on DemoService");
        };
        ok++;
        if (replies.size() < 3) replies.add(text);
        Matcher mm = SERVER.matcher(text);
        String server = mm.find() ? mm.group(1) : "?";
        byServer.merge(server, 1, Integer::sum);
        byMethodServer.merge(m + ":" + server, 1, Integer::sum);
        if (last != null && !server.equals(last)) switches++;
        last = server;
        if (!quiet) System.out.println(text);
      } catch (RuntimeException e) {
        errors++;
        String msg = String.valueOf(e.getMessage());
        if (errorMessages.size() < 5) errorMessages.add(msg.length() > 4000 ? msg.substring(0, 4000) : msg);
        if (!quiet) System.out.println("error: " + msg);
      }
      if (interval > 0) Thread.sleep((long) (interval * 1000));
    }
    Map<String, Object> summary = new TreeMap<>();
    summary.put("calls", calls);
    summary.put("ok", ok);
    summary.put("errors", errors);
    summary.put("switches", switches);
    summary.put("by_server", byServer);
    summary.put("by_method_server", byMethodServer);
    summary.put("error_messages", errorMessages);
    summary.put("replies", replies);
    System.out.println("SUMMARY " + PyJson.of(summary));
    System.out.flush();
    // Dubbo's threads would keep the JVM alive; its shutdown hook closes the
    // connection.
    System.exit(0);
  }
}
