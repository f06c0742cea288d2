#!/usr/bin/env node
/*
 * A real Dubbo consumer built on sofa-rpc-node's RpcClient with the dubbo
 * protocol (dubbo-remoting, Hessian 2), in direct mode (no registry: the
 * consumer's serverHost is --host:--port). Every call goes over ONE TCP
 * connection, the way request-level balancing has to be shown.
 *
 * Same contract as tests/peers/thrift/client.py: prints each reply (unless
 * --quiet) and a final line
 *   SUMMARY {"by_method_server": {...}, "by_server": {...}, "calls": N, (plus "replies": the first 3)
 *            "error_messages": [...], "errors": N, "ok": N, "switches": N}
 * The server name is parsed from "response from NAME/"; switches counts
 * consecutive replies from different servers. Remote exceptions count as
 * errors. Exit code 0 when it ran (even with errors), 1 if it could not
 * connect at all, 2 on bad arguments.
 *
 * Attachments: --attach k=v (repeatable) go into the request's attachment map
 * (sofa-rpc-node "requestProps"). dubbo-remoting builds the map as
 * {dubbo: "5.3.0", path, group: --group} + requestProps, then sets path and
 * version from the service signature: --attach can override "dubbo" (also the
 * version string in the body) and "group", not "path"/"version". Without
 * --attach the library adds its default {service: "<interface>:<version>"}.
 *
 * Any --method name is sent as is (unknown ones come back as errors).
 *
 * Usage: node sofa_consumer.js --host 127.0.0.1 --port 21881 [--calls 10]
 *        [--method sayHello|sayGoodbye|alternate|echoAttachment] [--arg metanode]
 *        [--attach k=v ...] [--interface com.example.DemoService]
 *        [--version 1.0.0] [--group G] [--timeout MS] [--interval SEC]
 *        [--linger SEC] [--quiet]
 */
'use strict';

const util = require('util');
const { RpcClient } = require('sofa-rpc-node').client;
const dubboProtocol = require('dubbo-remoting');

const { sleep, parseConsumerArgs, runCalls, printSummary } = require('./consumer_common');

function usage(msg) {
  if (msg) process.stderr.write(`sofa_consumer.js: ${msg}\n`);
  process.stderr.write('usage: sofa_consumer.js --host H --port P [--calls N] ' +
    '[--method sayHello|sayGoodbye|alternate|echoAttachment] [--arg S] [--attach k=v]... ' +
    '[--interface I] [--version V] [--group G] [--timeout MS] [--interval SEC] [--linger SEC] [--quiet]\n');
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv) {
  return parseConsumerArgs(argv, usage, {});
}

const logger = {
  debug() {},
  info() {},
  warn(...a) { console.error('[sofa warn] ' + util.format(...a)); },
  error(...a) { console.error('[sofa error] ' + util.format(...a)); },
};

async function main() {
  const opts = parseArgs(process.argv.slice(2));

  const client = new RpcClient({ logger, protocol: dubboProtocol });
  client.on('error', err => console.error(`[sofa error] ${err && err.message}`));
  const consumer = client.createConsumer({
    interfaceName: opts.interface,
    version: opts.version,
    group: opts.group,
    serverHost: `${opts.host}:${opts.port}`,
    responseTimeout: opts.timeout,
  });
  await consumer.ready();
  // Direct mode: ready() resolves even when the connect failed; the
  // connection manager then holds no connection for the address.
  if (client.connectionManager.connections.size === 0) {
    console.error(`sofa_consumer.js: could not connect to ${opts.host}:${opts.port}`);
    process.exit(1);
  }

  const summary = await runCalls(opts, async method => {
    const invokeOpts = { responseTimeout: opts.timeout };
    if (opts.attach) invokeOpts.requestProps = Object.assign({}, opts.attach);
    try {
      const reply = await consumer.invoke(method, [ opts.arg ], invokeOpts);
      return { text: typeof reply === 'string' ? reply : JSON.stringify(reply) };
    } catch (err) {
      return { error: (err && err.message) || String(err) };
    }
  });
  await Promise.race([ client.close(), sleep(2000) ]);
  printSummary(summary);
  process.exit(0);
}

main().catch(err => {
  console.error(`sofa_consumer.js: ${err && err.stack || err}`);
  process.exit(1);
});
