#!/usr/bin/env node
// End-to-end streaming perplexity (issue: KV-cache policies): tokens/s and
// peak RSS of `lococo perplexity` at input lengths 2k, 8k and 32k tokens for
// the full cache and every bounded policy, each run in its own process so that
// its peak RSS is its own. Prints each bounded policy's speed as a multiple of
// full's at the same length and its RSS growth from the shortest to the
// longest input; writes JSON.
//
//   node bench/e2e_streaming.js [--model DIR] [--lengths 2048,8192,32768]
//        [--budget 256] [--chunk 128] [--threads N] [--out out/bench/e2e_streaming.json]
// Environment: LOCOCO (default build/lococo). The text is the Moby Dick train
// chapters (data/train, scripts/fetch-corpus.sh), concatenated.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const args = { model: '', lengths: '2048,8192,32768', budget: '256', chunk: '128', threads: '0',
  out: 'out/bench/e2e_streaming.json', policies: 'full,streaming,h2o,tova,snapkv,lococo-hh,lococo' };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (key === 'help' || !(key in args)) {
    console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 14).join('\n'));
    process.exit(key === 'help' ? 0 : 2);
  }
  args[key] = process.argv[i + 1];
}
const lococo = process.env.LOCOCO || 'build/lococo';
const lengths = args.lengths.split(',').map(Number);
const policies = args.policies.split(',');

// The input: Moby Dick train chapters, enough for the longest run (about 4 characters per token).
const dir = 'data/train';
const chapters = fs.readdirSync(dir).filter((f) => f.startsWith('moby-dick')).sort();
let text = '';
for (const c of chapters) {
  if (text.length > Math.max(...lengths) * 8) break;
  text += fs.readFileSync(path.join(dir, c), 'utf8') + '\n';
}
const input = path.join(path.dirname(args.out), 'e2e_streaming_input.txt');
fs.mkdirSync(path.dirname(args.out), { recursive: true });
fs.writeFileSync(input, text);

function run(policy, length) {
  const argv = ['perplexity', '--file', input, '--max-tokens', String(length), '--cache', policy,
    '--budget', args.budget, '--chunk', args.chunk, '--json', '--threads', args.threads];
  if (args.model) argv.push('--model', args.model);
  const out = execFileSync(lococo, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(out.trim().split('\n').pop());
}

const results = [];
for (const length of lengths)
  for (const policy of policies) {
    const r = run(policy, length);
    if (r.tokens < length) throw new Error(`input has only ${r.tokens} tokens, need ${length}`);
    results.push({ policy, length, tokens_per_second: r.tokens_per_second, peak_rss_bytes: r.peak_rss_bytes,
      cache_bytes: r.cache_bytes, perplexity: r.perplexity });
    process.stderr.write(`${policy} @ ${length}: ${r.tokens_per_second.toFixed(0)} tok/s, ` +
      `RSS ${(r.peak_rss_bytes / 2 ** 20).toFixed(1)} MiB\n`);
  }

const find = (p, l) => results.find((r) => r.policy === p && r.length === l);
const [shortest, longest] = [lengths[0], lengths[lengths.length - 1]];
const summary = policies.map((p) => ({
  policy: p,
  speedup_vs_full: Object.fromEntries(lengths.map((l) => [l, find(p, l).tokens_per_second / find('full', l).tokens_per_second])),
  rss_growth: find(p, longest).peak_rss_bytes / find(p, shortest).peak_rss_bytes - 1,
}));
let table = `| policy | ${lengths.map((l) => `tok/s @${l}`).join(' | ')} | x full @${longest} | RSS @${shortest} | RSS @${longest} | growth |\n`;
table += '|---|' + lengths.map(() => '---|').join('') + '---|---|---|---|\n';
for (const s of summary) {
  table += `| ${s.policy} | ${lengths.map((l) => find(s.policy, l).tokens_per_second.toFixed(0)).join(' | ')} | ` +
    `${s.speedup_vs_full[longest].toFixed(2)} | ${(find(s.policy, shortest).peak_rss_bytes / 2 ** 20).toFixed(1)} MiB | ` +
    `${(find(s.policy, longest).peak_rss_bytes / 2 ** 20).toFixed(1)} MiB | ${(100 * s.rss_growth).toFixed(1)}% |\n`;
}
console.log(table);
const report = { kind: 'e2e_streaming', model: args.model || '(default)', budget: Number(args.budget),
  chunk: Number(args.chunk), lengths, results, summary };
const tmp = `${args.out}.tmp${process.pid}`;
fs.writeFileSync(tmp, JSON.stringify(report, null, 2) + '\n');
fs.renameSync(tmp, args.out);
console.log(`wrote ${args.out}`);
