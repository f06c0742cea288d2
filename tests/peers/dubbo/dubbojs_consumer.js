#!/usr/bin/env node
/*
 * A real Dubbo consumer built on apache-dubbo-js 3.0.0-rc6 (Hessian 2), with
 * no registry. Every call goes over ONE TCP connection (the library opens one
 * SocketWorker per provider address).
 *
 * Same contract and flags as sofa_consumer.js / tests/peers/thrift/client.py:
 * prints each reply (unless --quiet) and a final line
 *   SUMMARY {"by_method_server": {...}, "by_server": {...}, "calls": N,
 *            "error_messages": [...], "errors": N, "ok": N, "switches": N}
 * Exit code 0 when it ran (even with errors), 1 if it could not connect at
 * all, 2 on bad arguments.
 *
 * Two ways of reaching the provider directly (--mode):
 *   direct  (default without --attach) DirectlyDubbo.from({dubboAddress}).
 *           Its API cannot carry custom attachments: a request always holds
 *           {path, interface, version, application: "dubbo-js"} plus "group"
 *           when --group is given. --attach is refused in this mode.
 *   static  (default with --attach) the full Dubbo class with an in-process
 *           Registry that announces only --host:--port (no ZooKeeper), and a
 *           middleware that sets ctx.attachments from --attach k=v. These are
 *           merged over {path, interface, version}; then "application"
 *           ("dubbojs-consumer") and, when --group is given, "group" are
 *           written over them.
 *
 * Any --method name is sent as is (unknown ones come back as errors). Error
 * replies with a status other than 20 are reported as the library gives them:
 * the raw body bytes as text, so the message starts with the Hessian string
 * length prefix (e.g. "0ACan not find method: ..."); in static mode the
 * library also prefixes "uuid:  invoke <iface>#<method> was error, ".
 *
 * Usage: node dubbojs_consumer.js --host 127.0.0.1 --port 21881 [--calls 10]
 *        [--method sayHello|sayGoodbye|alternate|echoAttachment] [--arg metanode]
 *        [--attach k=v ...] [--mode direct|static] [--interface com.example.DemoService]
 *        [--version 1.0.0] [--group G] [--dubbo-version 2.0.2] [--timeout MS]
 *        [--interval SEC] [--linger SEC] [--quiet]
 */
'use strict';

const { DirectlyDubbo, Dubbo, Registry, setting, java } = require('apache-dubbo-js');

const { sleep, parseConsumerArgs, runCalls, printSummary } = require('./consumer_common');

function usage(msg) {
  if (msg) process.stderr.write(`dubbojs_consumer.js: ${msg}\n`);
  process.stderr.write('usage: dubbojs_consumer.js --host H --port P [--calls N] ' +
    '[--method sayHello|sayGoodbye|alternate|echoAttachment] [--arg S] [--attach k=v]... ' +
    '[--mode direct|static] [--interface I] [--version V] [--group G] [--dubbo-version V] ' +
    '[--timeout MS] [--interval SEC] [--linger SEC] [--quiet]\n');
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv) {
  const opts = parseConsumerArgs(argv, usage, { mode: null, dubboVersion: '2.0.2' }, (flag, value, o) => {
    if (flag === '--mode') o.mode = value();
    else if (flag === '--dubbo-version') o.dubboVersion = value();
    else return false;
    return true;
  });
  if (opts.mode === null) opts.mode = opts.attach ? 'static' : 'direct';
  if (opts.mode !== 'direct' && opts.mode !== 'static') usage('--mode is direct or static');
  if (opts.mode === 'direct' && opts.attach) {
    usage('DirectlyDubbo cannot send custom attachments; use --mode static');
  }
  return opts;
}


// The methods the proxy object offers: every argument is sent as java.lang.String.
function methodTable(names) {
  const methods = {};
  for (const name of names) methods[name] = arg => [ java.String(arg) ];
  return methods;
}

// --mode direct: DirectlyDubbo. Resolves to the proxy once the socket is up,
// or null when the first connect attempt failed.
async function connectDirect(opts, methodNames) {
  const dubbo = DirectlyDubbo.from({
    dubboAddress: `${opts.host}:${opts.port}`,
    dubboVersion: opts.dubboVersion,
    dubboInvokeTimeout: opts.timeout / 1000, // seconds
  });
  const service = dubbo.proxyService({
    dubboInterface: opts.interface,
    version: opts.version,
    group: opts.group || undefined,
    methods: methodTable(methodNames),
  });
  // DirectlyDubbo has no connect callback or close(); look at its one
  // SocketWorker: CONNECTED, or RETRY after a failed connect.
  const worker = dubbo._socketWorker;
  const deadline = Date.now() + Math.max(opts.timeout, 3000);
  while (Date.now() < deadline) {
    if (worker.isAvaliable) return service;
    if (worker.isRetry) return null;
    await sleep(10);
  }
  return null;
}

// --mode static: the Dubbo class fed by a Registry that knows one provider.
async function connectStatic(opts, methodNames) {
  const address = `${opts.host}:${opts.port}`;
  const provider = {
    host: opts.host,
    port: opts.port,
    path: opts.interface,
    dubboVersion: opts.dubboVersion,
    version: opts.version,
    group: opts.group,
  };
  class StaticRegistry extends Registry {
    constructor(props) {
      super(props);
      this._dubboServiceUrlMap.set(opts.interface, [ provider ]);
    }
    subscribe(subscriber) {
      super.subscribe(subscriber);
      setImmediate(() => this._subscriber.onData(new Set([ address ])));
      return this;
    }
  }
  let connected = false;
  const dubbo = new Dubbo({
    application: { name: 'dubbojs-consumer' },
    register: props => new StaticRegistry(props),
    dubboSetting: setting.match(opts.interface, { version: opts.version, group: opts.group }),
    dubboInvokeTimeout: opts.timeout / 1000, // seconds
  });
  dubbo.subscribe({
    onTrace(msg) {
      if (msg && typeof msg.msg === 'string' && msg.msg.includes('SocketWorker connect')) connected = true;
    },
  });
  const attachments = Object.assign({}, opts.attach || {});
  dubbo.use(async (ctx, next) => {
    ctx.attachments = attachments;
    await next();
  });
  const service = dubbo.proxyService({
    dubboInterface: opts.interface,
    methods: methodTable(methodNames),
  });
  const deadline = Date.now() + Math.max(opts.timeout, 3000);
  while (Date.now() < deadline) {
    if (connected) return service;
    await sleep(10);
  }
  return null;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const methodNames = opts.method === 'alternate' ? [ 'sayHello', 'sayGoodbye' ] : [ opts.method ];
  const service = opts.mode === 'direct' ?
    await connectDirect(opts, methodNames) :
    await connectStatic(opts, methodNames);
  if (!service) {
    console.error(`dubbojs_consumer.js: could not connect to ${opts.host}:${opts.port}`);
    process.exit(1);
  }

  const summary = await runCalls(opts, async method => {
    // Both APIs resolve to {res, err} instead of rejecting.
    const { res, err } = await service[method](opts.arg);
    if (err) return { error: err.message || String(err) };
    return { text: typeof res === 'string' ? res : JSON.stringify(res) };
  });
  printSummary(summary);
  // apache-dubbo-js has no close(): exiting closes the socket (and stops its
  // reconnect / heartbeat timers).
  process.exit(0);
}

main().catch(err => {
  console.error(`dubbojs_consumer.js: ${err && err.stack || err}`);
  process.exit(1);
});
