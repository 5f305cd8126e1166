// SPDX-License-Identifier: MIT OR Apache-2.0
// Interop: @grpc/grpc-js (Node.js, an independent gRPC implementation) as the
// client of amaters-netd over mutual TLS.
// usage: node grpcjs_interop.js --netd PATH --pki DIR --proto DIR
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['netd', 'pki', 'proto']) if (!args[k]) { console.error(`missing --${k}`); process.exit(2); }

const defs = loader.loadSync(['amaters.proto', 'health.proto'], { includeDirs: [args.proto], keepCase: true, enums: String });
const pkg = grpc.loadPackageDefinition(defs);
const read = (f) => fs.readFileSync(path.join(args.pki, f));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

function startDaemon(port) {
  return new Promise((resolve, reject) => {
    const d = spawn(args.netd, ['--listen', `127.0.0.1:${port}`, '--pki-dir', args.pki], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const onData = (b) => { log += b; if (log.includes('listening on')) resolve(d); };
    d.stdout.on('data', onData);
    d.stderr.on('data', onData);
    d.on('exit', (code) => reject(new Error(`amaters-netd exited (${code}): ${log}`)));
    setTimeout(() => reject(new Error('amaters-netd did not start: ' + log)), 10000);
  });
}

const chanOpts = { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 };
function client(port, creds) {
  return new pkg.amaters.v1.AmateRS(`localhost:${port}`, creds || grpc.credentials.createSsl(
    read('ca.pem'), read('client-key.pem'), read('client.pem')), chanOpts);
}
const deadline = (ms) => new Date(Date.now() + ms);

const results = [];
async function check(name, fn) {
  try { await fn(); results.push([name, true]); console.log(`ok   ${name}`); }
  catch (e) { results.push([name, false]); console.log(`FAIL ${name}: ${e && e.stack || e}`); }
}
function assert(c, msg) { if (!c) throw new Error(msg); }

// resolves once both the callback and the final status (with trailers) are in
function unary(c, req, opts = {}, md = new grpc.Metadata()) {
  return new Promise((resolve) => {
    let out = null, trailers = null;
    const done = () => { if (out && trailers) resolve({ ...out, trailers }); };
    const call = c.Execute(req, md, { deadline: deadline(opts.ms || 5000) }, (err, res) => { out = { err, res }; done(); });
    call.on('status', (s) => { trailers = s.metadata; done(); });
  });
}

async function main() {
  const port = await freePort();
  execFileSync(path.join(path.dirname(args.netd), 'amaters-cli'), ['certs', 'init', args.pki], { stdio: 'ignore' });
  const d = await startDaemon(port);
  const c = client(port);
  try {
    await check('unary echo over mTLS', async () => {
      const { err, res } = await unary(c, { query_bytes: Buffer.from('hello from grpc-js') });
      assert(!err, err && err.message);
      assert(res.result_bytes.toString() === 'hello from grpc-js', 'wrong echo');
    });
    await check('unary 4 MiB', async () => {
      const big = Buffer.alloc(4 << 20, 7);
      const { err, res } = await unary(c, { query_bytes: big }, { ms: 20000 });
      assert(!err, err && err.message);
      assert(Buffer.compare(res.result_bytes, big) === 0, 'payload differs');
    });
    await check('metadata both ways (ASCII and -bin)', async () => {
      const md = new grpc.Metadata();
      md.set('x-echo-text', 'node says hi');
      md.set('x-echo-blob-bin', Buffer.from([0, 1, 254, 255]));
      const { err, trailers } = await unary(c, { query_bytes: Buffer.from('m') }, {}, md);
      assert(!err, err && err.message);
      assert(trailers.get('x-echo-text')[0] === 'node says hi', 'text metadata not echoed');
      assert(Buffer.compare(trailers.get('x-echo-blob-bin')[0], Buffer.from([0, 1, 254, 255])) === 0, 'binary metadata not echoed');
    });
    await check('bidi stream of 500 messages', () => new Promise((resolve, reject) => {
      const s = c.ExecuteStream({ deadline: deadline(20000) });
      let n = 0;
      s.on('data', (r) => { if (r.result_bytes.toString() !== `q${n}`) reject(new Error(`out of order at ${n}`)); n++; });
      s.on('error', reject);
      s.on('end', () => (n === 500 ? resolve() : reject(new Error(`got ${n}`))));
      for (let i = 0; i < 500; i++) s.write({ query_bytes: Buffer.from(`q${i}`) });
      s.end();
    }));
    await check('deadline exceeded', async () => {
      const { err } = await unary(c, { query_bytes: Buffer.alloc(32 << 20) }, { ms: 1 });
      assert(err && err.code === grpc.status.DEADLINE_EXCEEDED, `got ${err && err.code}`);
    });
    await check('unknown method is UNIMPLEMENTED', () => new Promise((resolve, reject) => {
      c.makeUnaryRequest('/amaters.v1.AmateRS/Nope', (x) => x, (x) => x, Buffer.alloc(0), (err) => {
        if (err && err.code === grpc.status.UNIMPLEMENTED) resolve(); else reject(new Error(`got ${err && err.code}`));
      });
    }));
    await check('health Check SERVING', () => new Promise((resolve, reject) => {
      const h = new pkg.grpc.health.v1.Health(`localhost:${port}`, grpc.credentials.createSsl(
        read('ca.pem'), read('client-key.pem'), read('client.pem')));
      h.Check({ service: '' }, (err, res) => {
        h.close();
        if (err) reject(err); else if (res.status !== 'SERVING') reject(new Error(res.status)); else resolve();
      });
    }));
    await check('refused without a client certificate', async () => {
      const nc = client(port, grpc.credentials.createSsl(read('ca.pem')));
      const { err } = await unary(nc, { query_bytes: Buffer.from('x') });
      nc.close();
      assert(err && err.code === grpc.status.UNAVAILABLE, `got ${err && err.code}`);
    });
    await check('daemon still serves after the refusal', async () => {
      const { err, res } = await unary(c, { query_bytes: Buffer.from('again') });
      assert(!err && res.result_bytes.toString() === 'again', err && err.message);
    });
  } finally {
    c.close();
    d.kill('SIGTERM');
  }
  const code = await new Promise((resolve) => d.on('exit', (c2) => resolve(c2)));
  await check('SIGTERM exits 0', async () => assert(code === 0, `exit ${code}`));
  const failed = results.filter((r) => !r[1]).length;
  console.log(`grpc-js: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
main().catch((e) => { console.error(e); process.exit(1); });
