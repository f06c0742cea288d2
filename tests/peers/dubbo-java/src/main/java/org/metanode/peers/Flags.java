package org.metanode.peers;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** "--flag value" and "--switch" arguments, as the npm and Python peers take them. */
final class Flags {
  private final Map<String, List<String>> values = new LinkedHashMap<>();
  private final String usage;

  Flags(String[] argv, String usage, String... switches) {
    this.usage = usage;
    List<String> bare = List.of(switches);
    for (int i = 0; i < argv.length; i++) {
      String flag = argv[i];
      if (!flag.startsWith("--")) fail("unexpected argument " + flag);
      if (bare.contains(flag)) {
        values.computeIfAbsent(flag, k -> new ArrayList<>()).add("true");
        continue;
      }
      if (i + 1 >= argv.length) fail("missing value for " + flag);
      values.computeIfAbsent(flag, k -> new ArrayList<>()).add(argv[++i]);
    }
  }

  void fail(String why) {
    System.err.println(why);
    System.err.println("usage: " + usage);
    System.exit(2);
  }

  /** Refuses any flag not in {@code known}: a typo must not pass silently. */
  void only(String... known) {
    List<String> k = List.of(known);
    for (String f : values.keySet())
      if (!k.contains(f)) fail("unknown argument " + f);
  }

  String get(String flag, String dflt) {
    List<String> v = values.get(flag);
    return v == null ? dflt : v.get(v.size() - 1);
  }

  List<String> all(String flag) {
    return values.getOrDefault(flag, List.of());
  }

  int integer(String flag, int dflt) {
    String v = get(flag, null);
    if (v == null) return dflt;
    try {
      return Integer.parseInt(v);
    } catch (NumberFormatException e) {
      fail(flag + " wants a number, got " + v);
      return dflt;
    }
  }

  boolean on(String flag) {
    return values.containsKey(flag);
  }
}
