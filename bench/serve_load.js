#!/usr/bin/env node
// Load test of `lococo serve` on loopback (issue: server): a fixed number of
// completion requests at 1, 4 and 16 concurrent clients; requests/s, p50 and
// p99 latency and generated tokens/s per level, side by side; writes JSON.
//
//   node bench/serve_load.js [--model DIR] [--clients 1,4,16] [--requests 48]
//        [--max-tokens 32] [--parallel 4] [--cache lococo] [--budget 128] [--chunk 128]
//        [--out out/bench/serve_load.json]
// Environment: LOCOCO (default build/lococo). Starts its own server on a free
// port and stops it (SIGTERM) at the end.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = { model: '', clients: '1,4,16', requests: '48', 'max-tokens': '32', parallel: '4', cache: 'lococo',
  budget: '128', chunk: '128', out: 'out/bench/serve_load.json' };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (key === 'help' || !(key in args)) {
    console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 10).join('\n'));
    process.exit(key === 'help' ? 0 : 2);
  }
  args[key] = process.argv[i + 1];
}
const lococo = process.env.LOCOCO || 'build/lococo';

// Starts the server; resolves with its base URL once it prints it.
function startServer() {
  const argv = ['serve', '--port', '0', '--parallel', args.parallel, '--queue', '256', '--cache', args.cache,
    '--budget', args.budget, '--chunk', args.chunk];
  if (args.model) argv.push('--model', args.model);
  const proc = spawn(lococo, argv, { stdio: ['ignore', 'inherit', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    proc.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/http:\/\/([\d.]+):(\d+)/);
      if (m) resolve({ proc, url: `http://${m[1]}:${m[2]}` });
    });
    proc.on('exit', (code) => reject(new Error(`lococo serve exited (${code}): ${err.trim()}`)));
  });
}

const prompts = ['Call me Ishmael.', 'It was the best of times,', 'The whale rose', 'Some years ago, never mind how long'];

async function one(url, i) {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: prompts[i % prompts.length], max_tokens: Number(args['max-tokens']), ignore_eos: true }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`request ${i}: ${res.status} ${JSON.stringify(body)}`);
  return { seconds: (performance.now() - t0) / 1000, tokens: body.usage.completion_tokens };
}

// `total` requests spread over `clients` workers that each send one after another.
async function level(url, clients, total) {
  const done = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < total) done.push(await one(url, next++));
  };
  await Promise.all(Array.from({ length: clients }, worker));
  const wall = (performance.now() - t0) / 1000;
  const lat = done.map((d) => d.seconds).sort((a, b) => a - b);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  const tokens = done.reduce((s, d) => s + d.tokens, 0);
  return { clients, requests: total, seconds: wall, requests_per_second: total / wall, p50_seconds: pct(0.5),
    p99_seconds: pct(0.99), generated_tokens_per_second: tokens / wall };
}

(async () => {
  const { proc, url } = await startServer();
  const results = [];
  try {
    await level(url, 1, 2);  // warm-up
    for (const c of args.clients.split(',').map(Number)) {
      const r = await level(url, c, Number(args.requests));
      results.push(r);
      console.error(`${c} client(s): ${r.requests_per_second.toFixed(2)} req/s, p50 ${(r.p50_seconds * 1000).toFixed(0)} ms, ` +
        `p99 ${(r.p99_seconds * 1000).toFixed(0)} ms, ${r.generated_tokens_per_second.toFixed(1)} generated tok/s`);
    }
  } finally {
    proc.kill('SIGTERM');
  }
  const base = results[0];
  console.log('| clients | req/s | x vs 1 | p50 ms | p99 ms | gen tok/s |\n|---|---|---|---|---|---|');
  for (const r of results)
    console.log(`| ${r.clients} | ${r.requests_per_second.toFixed(2)} | ${(r.requests_per_second / base.requests_per_second).toFixed(2)} | ` +
      `${(r.p50_seconds * 1000).toFixed(0)} | ${(r.p99_seconds * 1000).toFixed(0)} | ${r.generated_tokens_per_second.toFixed(1)} |`);
  const report = { server: { parallel: Number(args.parallel), cache: args.cache, budget: Number(args.budget),
    chunk: Number(args.chunk), max_tokens: Number(args['max-tokens']) }, results };
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out + '.tmp', JSON.stringify(report, null, 2));
  fs.renameSync(args.out + '.tmp', args.out);
  console.error(`wrote ${args.out}`);
})().catch((e) => {
  console.error(`serve_load: ${e.message}`);
  process.exit(1);
});
