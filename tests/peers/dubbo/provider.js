#!/usr/bin/env node
/*
 * A real Dubbo provider for metanode's tests and demo: sofa-rpc-node's
 * RpcServer speaking the dubbo protocol (dubbo-remoting, Hessian 2), with no
 * registry (consumers connect directly).
 *
 * Interface (default com.example.DemoService, version 1.0.0):
 *   sayHello(String)       -> "Hello <arg>, response from <NAME>/<IP>"
 *   sayGoodbye(String)     -> "Goodbye <arg>, response from <NAME>/<IP>"
 *   echoAttachment(String) -> the value of the request attachment named <arg>
 *                             exactly as this provider decoded it, or "<absent>"
 *                             ("<empty>" for an empty string: dubbo-remoting
 *                             cannot encode an empty/null return value).
 *
 * Routing is by path + version (a request for another version fails with
 * "not found service: ..."). When --group is given the request's "group"
 * attachment must equal it; without --group a request carrying a non-empty
 * group is refused (the way a Java provider's service key works).
 *
 * Prints "listening HOST:PORT as NAME" once ready and "peer IP:PORT" for every
 * accepted TCP connection, so tests can prove who connected to it.
 *
 * Usage: node provider.js --port 21881 --name dubbo-sample-server-v1 --ip 127.0.0.1
 *        [--host 0.0.0.0] [--interface com.example.DemoService] [--version 1.0.0]
 *        [--group G] [--verbose]
 */
'use strict';

const net = require('net');
const util = require('util');
const { RpcServer } = require('sofa-rpc-node').server;
const dubboProtocol = require('dubbo-remoting');

function parseArgs(argv) {
  const opts = {
    host: '0.0.0.0',
    port: null,
    name: null,
    ip: null,
    interface: 'com.example.DemoService',
    version: '1.0.0',
    group: '',
    delayMs: 0,
    verbose: false,
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
      case '--name': opts.name = value(); break;
      case '--ip': opts.ip = value(); break;
      case '--interface': opts.interface = value(); break;
      case '--version': opts.version = value(); break;
      case '--group': opts.group = value(); break;
      case '--delay-ms': opts.delayMs = Number(value()); break;
      case '--verbose': opts.verbose = true; break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('--port is required');
  if (!opts.name) usage('--name is required');
  if (!opts.ip) opts.ip = opts.host;
  return opts;
}

function usage(msg) {
  if (msg) process.stderr.write(`provider.js: ${msg}\n`);
  process.stderr.write('usage: provider.js --port P --name NAME [--ip IP] [--host H] ' +
    '[--interface I] [--version V] [--group G] [--delay-ms N] [--verbose]\n');
  process.exit(msg ? 2 : 0);
}

const opts = parseArgs(process.argv.slice(2));

function stripMapped(addr) {
  return typeof addr === 'string' && addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}

// sofa-rpc-node wants a logger; keep stdout for the lines tests parse.
const logger = {
  debug() {},
  info(...a) { if (opts.verbose) console.error('[info] ' + util.format(...a)); },
  warn(...a) { console.error('[warn] ' + util.format(...a)); },
  error(...a) { console.error('[error] ' + util.format(...a)); },
};

class DemoProviderServer extends RpcServer {
  // RpcServer always listens on every interface; bind to --host instead and
  // report each accepted connection before handing it to the dubbo stack.
  _startServer(port) {
    const tcp = net.createServer(socket => {
      console.log(`peer ${stripMapped(socket.remoteAddress)}:${socket.remotePort}`);
      this._handleSocket(socket);
    });
    tcp.once('error', err => { this.emit('error', err); });
    tcp.listen(port, opts.host);
    this.tcpServer = tcp;
    return tcp;
  }

  // What the service methods get as `this`: the decoded request. With
  // dubbo-remoting, req.data.requestProps is the attachment map merged with
  // the header fields it read from the body ("dubbo" version and "path").
  createContext(req) {
    return {
      attachments: (req.data && req.data.requestProps) || {},
      methodName: req.data && req.data.methodName,
      packetId: req.packetId,
    };
  }
}

const server = new DemoProviderServer({
  logger,
  protocol: dubboProtocol,
  port: opts.port,
  version: opts.version,
  group: opts.group,
});
server.on('error', err => {
  console.error(`[error] ${err && err.message}`);
});

const who = `${opts.name}/${opts.ip}`;

// Every call is logged ("call <method>"), so tests can count what reached
// this provider (mirrored copies, retries) without trusting the proxy.
function checkGroup(ctx, method) {
  console.log(`call ${method}`);
  const got = ctx && ctx.attachments && ctx.attachments.group ? String(ctx.attachments.group) : '';
  if (got !== opts.group) {
    const err = new Error(`not found service: ${opts.interface}:${opts.version} in group "${got}" ` +
      `(this provider serves group "${opts.group}")`);
    err.ignoreLog = true;
    throw err;
  }
}

server.addService({ interfaceName: opts.interface, version: opts.version, group: opts.group }, {
  async sayHello(name) {
    checkGroup(this, 'sayHello');
    if (opts.delayMs > 0) await new Promise(resolve => setTimeout(resolve, opts.delayMs));
    return `Hello ${name}, response from ${who}`;
  },
  async sayGoodbye(name) {
    checkGroup(this, 'sayGoodbye');
    return `Goodbye ${name}, response from ${who}`;
  },
  async echoAttachment(key) {
    checkGroup(this, 'echoAttachment');
    const attachments = (this && this.attachments) || {};
    if (!Object.prototype.hasOwnProperty.call(attachments, key) || attachments[key] == null) {
      return '<absent>';
    }
    const value = attachments[key];
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    return text === '' ? '<empty>' : text;
  },
});
if (opts.version === '') {
  // A request without a version is routed by bare path; RpcServer keys
  // services as "interface:version", so register the bare name too.
  server.services.set(opts.interface, server.services.get(`${opts.interface}:`));
}

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  if (opts.verbose) console.error(`[info] ${signal}: closing`);
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  server.close().then(() => process.exit(0), () => process.exit(0));
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

server.start().then(() => {
  console.log(`listening ${opts.host}:${server.tcpServer.address().port} as ${opts.name}`);
}, err => {
  console.error(`provider.js: cannot listen on ${opts.host}:${opts.port}: ${err.message}`);
  process.exit(1);
});
