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

const SERVER_RE = /response from ([^/]+)\//;

function usage(msg) {
  if (msg) process.stderr.write(`sofa_consumer.js: ${msg}\n`);
  process.stderr.write('usage: sofa_consumer.js --host H --port P [--calls N] ' +
    '[--method sayHello|sayGoodbye|alternate|echoAttachment] [--arg S] [--attach k=v]... ' +
    '[--interface I] [--version V] [--group G] [--timeout MS] [--interval SEC] [--linger SEC] [--quiet]\n');
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv) {
  const opts = {
    host: null,
    port: null,
    calls: 10,
    method: 'sayHello',
    arg: 'metanode',
    attach: null,
    interface: 'com.example.DemoService',
    version: '1.0.0',
    group: '',
    timeout: 3000,
    interval: 0,
    linger: 0,
    quiet: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${flag}`);
      return argv[++i];
    };
    switch (flag) {
      case '--host': opts.host = value(); break;
      case '--port': opts.port = Number(value()); break;
      case '--calls': opts.calls = Number(value()); break;
      case '--method': opts.method = value(); break;
      case '--arg': case '--name': opts.arg = value(); break;
      case '--attach': {
        const kv = value();
        const eq = kv.indexOf('=');
        if (eq <= 0) usage(`--attach wants k=v, got ${kv}`);
        opts.attach = opts.attach || {};
        opts.attach[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--interface': opts.interface = value(); break;
      case '--version': opts.version = value(); break;
      case '--group': opts.group = value(); break;
      case '--timeout': opts.timeout = Number(value()); break;
      case '--interval': opts.interval = Number(value()); break;
      case '--linger': opts.linger = Number(value()); break;
      case '--quiet': opts.quiet = true; break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (!opts.host) usage('--host is required');
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535) usage('--port is required');
  if (!Number.isInteger(opts.calls) || opts.calls < 0) usage('--calls wants a count');
  if (!(opts.timeout > 0)) usage('--timeout wants milliseconds');
  if (!/^(sayHello|sayGoodbye|alternate|echoAttachment)$/.test(opts.method)) {
    // Any other name is sent as is, so tests can call unknown methods.
    if (!/^[A-Za-z_$][\w$]*$/.test(opts.method)) usage(`bad --method ${opts.method}`);
  }
  return opts;
}

// json.dumps(obj, sort_keys=True) as Python prints it, so both peers' SUMMARY
// lines look the same as the Thrift client's.
function pyJson(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (typeof v === 'string') {
    return JSON.stringify(v).replace(/[\u007f-\uffff]/g,
      c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }
  if (Array.isArray(v)) return '[' + v.map(pyJson).join(', ') + ']';
  return '{' + Object.keys(v).sort().map(k => pyJson(k) + ': ' + pyJson(v[k])).join(', ') + '}';
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

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

  const summary = {
    calls: 0, ok: 0, errors: 0, by_server: {}, by_method_server: {},
    error_messages: [], switches: 0, replies: [],
  };
  let last = null;
  for (let i = 0; i < opts.calls; i++) {
    let method = opts.method;
    if (method === 'alternate') method = i % 2 === 0 ? 'sayHello' : 'sayGoodbye';
    summary.calls += 1;
    const invokeOpts = { responseTimeout: opts.timeout };
    if (opts.attach) invokeOpts.requestProps = Object.assign({}, opts.attach);
    let reply;
    try {
      reply = await consumer.invoke(method, [ opts.arg ], invokeOpts);
    } catch (err) {
      summary.errors += 1;
      const msg = (err && err.message) || String(err);
      if (summary.error_messages.length < 5) summary.error_messages.push(msg);
      if (!opts.quiet) console.log(`error: ${msg}`);
      if (opts.interval) await sleep(opts.interval * 1000);
      continue;
    }
    summary.ok += 1;
    const text = typeof reply === 'string' ? reply : JSON.stringify(reply);
    if (summary.replies.length < 3) summary.replies.push(text);
    const m = SERVER_RE.exec(text);
    const server = m ? m[1] : '?';
    summary.by_server[server] = (summary.by_server[server] || 0) + 1;
    if (last !== null && server !== last) summary.switches += 1;
    last = server;
    const key = `${method}:${server}`;
    summary.by_method_server[key] = (summary.by_method_server[key] || 0) + 1;
    if (!opts.quiet) console.log(text);
    if (opts.interval) await sleep(opts.interval * 1000);
  }
  if (opts.linger) await sleep(opts.linger * 1000);
  await Promise.race([ client.close(), sleep(2000) ]);
  console.log('SUMMARY ' + pyJson(summary));
  process.exit(0);
}

main().catch(err => {
  console.error(`sofa_consumer.js: ${err && err.stack || err}`);
  process.exit(1);
});
