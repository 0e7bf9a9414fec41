// The official `openai` npm package against `lococo serve` on loopback:
// models, completions and chat, streamed and not, usage, n, logprobs, seeds
// and errors, as a client application would use them.
//   node openai_conformance_test.js
// Environment: LOCOCO_BINARY (the lococo executable), LOCOCO_SOURCE_DIR (the
// repository: its bundled model), OPENAI_MODULE (the installed package's
// directory; scripts/test.sh installs it). Exits 77 (skipped) without the package.
'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const binary = process.env.LOCOCO_BINARY;
const source = process.env.LOCOCO_SOURCE_DIR;
const moduleDir = process.env.OPENAI_MODULE;
if (!binary || !source) {
  console.error('openai_conformance_test: set LOCOCO_BINARY and LOCOCO_SOURCE_DIR');
  process.exit(2);
}
if (!moduleDir || !fs.existsSync(path.join(moduleDir, 'package.json'))) {
  console.error(`openai_conformance_test: the openai package is not installed at '${moduleDir}' ` +
                '(scripts/test.sh installs it); skipped');
  process.exit(77);
}
const OpenAI = require(moduleDir);

// Starts the server on a free port; resolves with {server, port} once it listens.
function startServer() {
  const server = spawn(binary, ['serve', '-m', path.join(source, 'models/lococo-tiny'), '--port', '0',
                                '--parallel', '1', '--max-choices', '4'],
                       { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 60000);
    server.stderr.on('data', (d) => {
      log += d;
      const m = /lococo serve: http:\/\/[^:]+:(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ server, port: Number(m[1]) });
      }
    });
    server.on('exit', (code) => reject(new Error(`server exited (${code}): ${log}`)));
  });
}

const checks = [];
function check(name, fn) { checks.push({ name, fn }); }

const chatMessages = [
  { role: 'developer', content: 'Answer briefly.' },
  { role: 'user', content: [{ type: 'text', text: 'Tell me about' }, { type: 'text', text: ' the whale.' }] },
];

check('models lists the loaded model with its creation time', async (client) => {
  const page = await client.models.list();
  assert.equal(page.data.length, 1);
  assert.equal(page.data[0].id, 'lococo');
  assert.equal(typeof page.data[0].created, 'number');
});

check('completion: text, usage, finish_reason and logprobs', async (client) => {
  const r = await client.completions.create({ model: 'lococo', prompt: 'Call me Ishmael.', max_tokens: 5, logprobs: 2 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(typeof c.text, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 5);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(c.logprobs.tokens.length, r.usage.completion_tokens);
  assert.equal(c.logprobs.token_logprobs.length, r.usage.completion_tokens);
  for (let i = 0; i < c.logprobs.tokens.length; ++i) {
    const top = c.logprobs.top_logprobs[i];
    assert.equal(Object.keys(top).length, 2);
    assert.ok(c.logprobs.token_logprobs[i] <= 0);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...Object.values(top)) - c.logprobs.token_logprobs[i]) < 1e-5);
  }
});

check('chat: developer role, content parts, max_completion_tokens, n and logprobs', async (client) => {
  const r = await client.chat.completions.create({
    model: 'lococo', messages: chatMessages, max_completion_tokens: 3, n: 2, temperature: 0.9, seed: 7,
    logprobs: true, top_logprobs: 1,
  });
  assert.equal(r.object, 'chat.completion');
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  let tokens = 0;
  for (const c of r.choices) {
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.logprobs.content.length <= 3);
    for (const t of c.logprobs.content) {
      assert.equal(t.top_logprobs.length, 1);
      assert.deepEqual(Buffer.from(t.bytes).toString('utf8'), t.token);
    }
    tokens += c.logprobs.content.length;
  }
  assert.equal(r.usage.completion_tokens, tokens);
});

check('chat streamed: the same text as unstreamed, then a usage chunk', async (client) => {
  const whole = await client.chat.completions.create({ model: 'lococo', messages: chatMessages, max_tokens: 8 });
  const stream = await client.chat.completions.create({
    model: 'lococo', messages: chatMessages, max_tokens: 8, stream: true, stream_options: { include_usage: true },
  });
  let text = '', usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) {
      usage = chunk.usage;
      assert.equal(chunk.choices.length, 0);
      continue;
    }
    text += chunk.choices[0].delta.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
});

check('completion streamed with n = 2: each choice by its index', async (client) => {
  const stream = await client.completions.create({
    model: 'lococo', prompt: 'The sea', max_tokens: 4, n: 2, stream: true, temperature: 1, seed: 3,
  });
  const finished = new Set();
  for await (const chunk of stream) {
    for (const c of chunk.choices) if (c.finish_reason) finished.add(c.index);
  }
  assert.deepEqual([...finished].sort(), [0, 1]);
});

check('seed: equal seeds sample equally, no seed samples afresh', async (client) => {
  const ask = (extra) => client.completions.create({
    model: 'lococo', prompt: 'It was', max_tokens: 12, temperature: 1.5, ignore_eos: true, ...extra,
  }).then((r) => r.choices[0].text);
  assert.equal(await ask({ seed: 11 }), await ask({ seed: 11 }));
  const free = new Set([await ask({}), await ask({}), await ask({})]);
  assert.ok(free.size > 1, 'three unseeded samples were identical');
});

check('errors: a bad request is a 400 BadRequestError naming the field', async (client) => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'lococo', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }],
    }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /messages\[0\]\.content\[0\]/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'lococo', prompt: 'x', n: 0 }),
                       (e) => e.status === 400 && /'n'/.test(e.message));
});

async function main() {
  const { server, port } = await startServer();
  const client = new OpenAI({ apiKey: 'unused', baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });
  let failed = 0;
  try {
    for (const { name, fn } of checks) {
      try {
        await fn(client);
        console.log(`ok   ${name}`);
      } catch (e) {
        ++failed;
        console.log(`FAIL ${name}\n     ${e.stack || e}`);
      }
    }
  } finally {
    server.kill('SIGTERM');
  }
  console.log(`${checks.length - failed}/${checks.length} checks passed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(`openai_conformance_test: ${e.stack || e}`);
  process.exit(1);
});
