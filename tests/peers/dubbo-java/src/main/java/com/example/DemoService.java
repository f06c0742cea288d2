package com.example;

/**
 * The interface the npm peers serve (tests/peers/dubbo/provider.js), so a
 * Java consumer can call any provider and the other way round.
 */
public interface DemoService {
  String sayHello(String name);

  String sayGoodbye(String name);

  /** The request attachment named {@code key} as the provider decoded it, or "<absent>". */
  String echoAttachment(String key);
}
