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

const SERVER_RE = /response from ([^/]+)\//;

function usage(msg) {
  if (msg) process.stderr.write(`dubbojs_consumer.js: ${msg}\n`);
  process.stderr.write('usage: dubbojs_consumer.js --host H --port P [--calls N] ' +
    '[--method sayHello|sayGoodbye|alternate|echoAttachment] [--arg S] [--attach k=v]... ' +
    '[--mode direct|static] [--interface I] [--version V] [--group G] [--dubbo-version V] ' +
    '[--timeout MS] [--interval SEC] [--linger SEC] [--quiet]\n');
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
    mode: null,
    interface: 'com.example.DemoService',
    version: '1.0.0',
    group: '',
    dubboVersion: '2.0.2',
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
      case '--mode': opts.mode = value(); break;
      case '--interface': opts.interface = value(); break;
      case '--version': opts.version = value(); break;
      case '--group': opts.group = value(); break;
      case '--dubbo-version': opts.dubboVersion = value(); break;
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
  // Names other than the four below are sent as is, so tests can call unknown methods.
  if (!/^[A-Za-z_$][\w$]*$/.test(opts.method)) usage(`bad --method ${opts.method}`);
  if (opts.mode === null) opts.mode = opts.attach ? 'static' : 'direct';
  if (opts.mode !== 'direct' && opts.mode !== 'static') usage('--mode is direct or static');
  if (opts.mode === 'direct' && opts.attach) {
    usage('DirectlyDubbo cannot send custom attachments; use --mode static');
  }
  return opts;
}

// json.dumps(obj, sort_keys=True) as Python prints it (see thrift/client.py).
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

  const summary = {
    calls: 0, ok: 0, errors: 0, by_server: {}, by_method_server: {},
    error_messages: [], switches: 0, replies: [],
  };
  let last = null;
  for (let i = 0; i < opts.calls; i++) {
    let method = opts.method;
    if (method === 'alternate') method = i % 2 === 0 ? 'sayHello' : 'sayGoodbye';
    summary.calls += 1;
    // Both APIs resolve to {res, err} instead of rejecting.
    const { res, err } = await service[method](opts.arg);
    if (err) {
      summary.errors += 1;
      const msg = err.message || String(err);
      if (summary.error_messages.length < 5) summary.error_messages.push(msg);
      if (!opts.quiet) console.log(`error: ${msg}`);
      if (opts.interval) await sleep(opts.interval * 1000);
      continue;
    }
    summary.ok += 1;
    const text = typeof res === 'string' ? res : JSON.stringify(res);
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
  console.log('SUMMARY ' + pyJson(summary));
  // apache-dubbo-js has no close(): exiting closes the socket (and stops its
  // reconnect / heartbeat timers).
  process.exit(0);
}

main().catch(err => {
  console.error(`dubbojs_consumer.js: ${err && err.stack || err}`);
  process.exit(1);
});
