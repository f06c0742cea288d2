/*
 * What both Node consumers share: the common flags, the call loop and the
 * SUMMARY line, whose format is tests/peers/thrift/client.py's (Python's
 * json.dumps(obj, sort_keys=True)), so every peer reports the same way.
 */
'use strict';

const SERVER_RE = /response from ([^/]+)\//;
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// json.dumps(obj, sort_keys=True) as Python prints it.
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

// Parses the flags every consumer takes; `extra(flag, value, opts)` handles
// the consumer's own flags and returns false for unknown ones.
function parseConsumerArgs(argv, usage, defaults, extra) {
  const opts = Object.assign({
    host: null, port: null, calls: 10, method: 'sayHello', arg: 'metanode', attach: null,
    interface: 'com.example.DemoService', version: '1.0.0', group: '', timeout: 3000,
    interval: 0, linger: 0, quiet: false,
  }, defaults);
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
      default:
        if (!extra || !extra(flag, value, opts)) usage(`unknown argument ${flag}`);
    }
  }
  if (!opts.host) usage('--host is required');
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535) usage('--port is required');
  if (!Number.isInteger(opts.calls) || opts.calls < 0) usage('--calls wants a count');
  if (!(opts.timeout > 0)) usage('--timeout wants milliseconds');
  // Any method name is sent as is, so tests can call unknown methods.
  if (!/^[A-Za-z_$][\w$]*$/.test(opts.method)) usage(`bad --method ${opts.method}`);
  return opts;
}

// Makes the calls over the consumer's one connection. `invoke(method)`
// resolves to {text} or {error}. Prints each reply and the SUMMARY line.
async function runCalls(opts, invoke) {
  const summary = {
    calls: 0, ok: 0, errors: 0, by_server: {}, by_method_server: {},
    error_messages: [], switches: 0, replies: [],
  };
  let last = null;
  for (let i = 0; i < opts.calls; i++) {
    let method = opts.method;
    if (method === 'alternate') method = i % 2 === 0 ? 'sayHello' : 'sayGoodbye';
    summary.calls += 1;
    const { text, error } = await invoke(method);
    if (error !== undefined) {
      summary.errors += 1;
      if (summary.error_messages.length < 5) summary.error_messages.push(error);
      if (!opts.quiet) console.log(`error: ${error}`);
    } else {
      summary.ok += 1;
      if (summary.replies.length < 3) summary.replies.push(text);
      const m = SERVER_RE.exec(text);
      const server = m ? m[1] : '?';
      summary.by_server[server] = (summary.by_server[server] || 0) + 1;
      if (last !== null && server !== last) summary.switches += 1;
      last = server;
      const key = `${method}:${server}`;
      summary.by_method_server[key] = (summary.by_method_server[key] || 0) + 1;
      if (!opts.quiet) console.log(text);
    }
    if (opts.interval) await sleep(opts.interval * 1000);
  }
  if (opts.linger) await sleep(opts.linger * 1000);
  return summary;
}

function printSummary(summary) {
  console.log('SUMMARY ' + pyJson(summary));
}

module.exports = { SERVER_RE, sleep, pyJson, parseConsumerArgs, runCalls, printSummary };
