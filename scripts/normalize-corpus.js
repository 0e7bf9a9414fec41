#!/usr/bin/env node
// Turns the unpacked npm corpus packages into plain UTF-8 text documents and
// splits them by document into train / validation / test.
// Called by scripts/fetch-corpus.sh, which pins and verifies the packages;
// the split rule below is repeated there and written to SPLITS.md.
//
//   node scripts/normalize-corpus.js --sotu DIR --moby DIR --brown DIR --out DIR
//        [--source "NAME@VERSION SHA256"]...
//
// Each DIR is the "package" folder of an unpacked tarball. OUT gets train/,
// validation/, test/ and SPLITS.md. Fails loudly (non-zero exit) when a
// package does not have the layout this script was written against, so a
// changed package can never silently produce a different corpus.
//
// Plain Node.js with no dependencies, and syntax old enough for the nodejs
// of older Debian/Ubuntu releases (no ?., ??, replaceAll).
'use strict';

const fs = require('fs');
const path = require('path');

const SPLITS = ['train', 'validation', 'test'];

// Split rule (keep in sync with the header of scripts/fetch-corpus.sh).
const SPLIT_RULE = [
  '- Moby Dick: chapters 1-110 -> train, 111-125 -> validation, 126-135 and',
  '  the epilogue -> test. The front matter (etymology, extracts) -> train;',
  '  the table of contents is dropped (it is only a list of chapter titles).',
  '- State of the Union: addresses sorted by year, ties by file name',
  '  (`YYYY_first_last_party`); index i (0-based): i % 10 == 9 -> test,',
  '  i % 10 == 0 and i > 0 -> validation, the rest -> train.',
  '- Brown: files sorted by name (ca01 ... cr09); index i (0-based):',
  '  i % 10 == 9 -> test, i % 10 == 4 -> validation, the rest -> train.',
  '- data/test/moby-dick-test.txt is the Moby Dick test chapters concatenated',
  '  in order (one long held-out document). It repeats the text of the',
  '  moby-dick-ch126..135/epilogue files, so do not count both.',
].join('\n');

function die(msg) {
  process.stderr.write('normalize-corpus: ' + msg + '\n');
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { sources: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--sotu' || a === '--moby' || a === '--brown' || a === '--out') {
      if (v === undefined) die('missing value for ' + a);
      opts[a.slice(2)] = v;
      i++;
    } else if (a === '--source') {
      if (v === undefined) die('missing value for ' + a);
      opts.sources.push(v);
      i++;
    } else {
      die('unknown argument ' + a);
    }
  }
  ['sotu', 'moby', 'brown', 'out'].forEach(function (k) {
    if (!opts[k]) die('--' + k + ' is required');
  });
  return opts;
}

// Whitespace and encoding clean-up shared by every source. Horizontal
// whitespace is collapsed (the sources use runs of spaces only as layout:
// verse indentation in Moby Dick, double spaces after sentences in SOTU),
// paragraphs are separated by exactly one blank line, and stray control
// characters (one \x02 in the 1890 SOTU) are dropped.
function cleanText(s) {
  s = s.normalize('NFC')
    .replace(/\r\n?/g, '\n')
    .replace(/\uFEFF/g, '')
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, '')
    .replace(/[ \t\u00A0]+/g, ' ');
  const lines = s.split('\n').map(function (l) { return l.trim(); });
  return lines.join('\n').replace(/\n{3,}/g, '\n\n').trim() + '\n';
}

function readUtf8(file) {
  const buf = fs.readFileSync(file);
  const s = buf.toString('utf8');
  // A lossy decode would put U+FFFD into the corpus without any error.
  if (s.indexOf('\uFFFD') >= 0) die(file + ' is not valid UTF-8');
  return s;
}

function mustExist(p, what) {
  if (!fs.existsSync(p)) die(what + ': expected ' + p + ' (package layout changed?)');
}

// ---------------------------------------------------------------- Moby Dick

function mobyDick(dir) {
  const data = path.join(dir, 'data');
  mustExist(data, 'moby-dick');
  const docs = [];
  // Front matter: real prose and quotations, useful as training text.
  ['etymology', 'extracts'].forEach(function (name) {
    const f = path.join(data, name + '.txt');
    mustExist(f, 'moby-dick');
    docs.push({ name: 'moby-dick-' + name + '.txt', split: 'train', text: cleanText(readUtf8(f)) });
  });
  const chapterFiles = fs.readdirSync(data).filter(function (f) { return /^chapter_\d+\.txt$/.test(f); });
  if (chapterFiles.length !== 135) die('moby-dick: expected 135 chapter files, found ' + chapterFiles.length);
  const test = [];
  for (let n = 1; n <= 136; n++) {
    const epilogue = n === 136;
    const f = path.join(data, epilogue ? 'epilogue.txt' : 'chapter_' + n + '.txt');
    mustExist(f, 'moby-dick');
    const text = cleanText(readUtf8(f));
    const heading = text.slice(0, text.indexOf('\n'));
    const expected = epilogue ? /^Epilogue\b/ : new RegExp('^CHAPTER ' + n + '\\. ');
    if (!expected.test(heading)) die('moby-dick: ' + f + ' starts with unexpected heading "' + heading + '"');
    const split = n <= 110 ? 'train' : n <= 125 ? 'validation' : 'test';
    const name = epilogue ? 'moby-dick-epilogue.txt' : 'moby-dick-ch' + String(n).padStart(3, '0') + '.txt';
    docs.push({ name: name, split: split, text: text });
    if (split === 'test') test.push(text);
  }
  // Chapters already end in "\n"; one extra newline keeps a blank line
  // between them, like between paragraphs.
  const extra = [{ name: 'moby-dick-test.txt', split: 'test', text: test.join('\n') }];
  return { docs: docs, extra: extra };
}

// ------------------------------------------------------ State of the Union

function slugName(name) {
  // stdlib's file names split "McKinley" into "Mc Kinley"; undo that so the
  // slug reads as the president's name.
  return name.toLowerCase().replace(/\bmc /g, 'mc').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function sotu(dir) {
  const data = path.join(dir, 'data');
  mustExist(data, 'sotu');
  // File names are YYYY_first_last_party.json, so a plain sort is "by year,
  // ties by name" (1953 and 1961 each have two addresses).
  const files = fs.readdirSync(data).filter(function (f) { return /^\d{4}_[a-z_]+\.json$/.test(f); }).sort();
  if (files.length < 200) die('sotu: expected over 200 addresses, found ' + files.length);
  const seen = {};
  return files.map(function (f, i) {
    let rec;
    try {
      rec = JSON.parse(readUtf8(path.join(data, f)));
    } catch (e) {
      die('sotu: cannot parse ' + f + ': ' + e.message);
    }
    if (typeof rec.year !== 'number' || typeof rec.name !== 'string' || typeof rec.text !== 'string') {
      die('sotu: ' + f + ' lacks year/name/text');
    }
    if (String(rec.year) !== f.slice(0, 4)) die('sotu: ' + f + ' has year ' + rec.year);
    const name = 'sotu-' + rec.year + '-' + slugName(rec.name) + '.txt';
    if (seen[name]) die('sotu: two addresses map to ' + name);
    seen[name] = true;
    const split = i % 10 === 9 ? 'test' : (i % 10 === 0 && i > 0) ? 'validation' : 'train';
    return { name: name, split: split, text: cleanText(rec.text) };
  });
}

// -------------------------------------------------------------------- Brown

// Tokens that attach to the previous word / the next word. `` and '' are
// Brown's opening and closing double quotes.
const ATTACH_LEFT = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''"]);
const ATTACH_RIGHT = new Set(['``', '(', '[', '{']);
// In this distribution every ; ? ! (and a few : and ,) is doubled
// ("?/. ?/."); a repeated one of these is never real English punctuation.
const COLLAPSE_REPEATS = new Set([',', ';', ':', '?', '!']);
const QUOTE_INSIDE = new Set([',', '.', '?', '!']);

// "word/TAG" -> [word, TAG]. The tag never contains "/", but the word may
// (e.g. "//in" is the word "/"), so split at the last slash.
function splitTag(tok) {
  const k = tok.lastIndexOf('/');
  return k > 0 ? [tok.slice(0, k), tok.slice(k + 1)] : [tok, ''];
}

// Rejoins one paragraph's words into readable text, undoing the quirks of
// Brown's tokenization. The bare single quote is not marked as opening or
// closing: decide from its neighbours where they tell, else alternate
// open/close within the paragraph.
function detokenize(words) {
  // Inch marks: the tokenizer also split them off as a closing quote
  // ("1/4''/nn ''/''"); keep one, printed as ".
  words = words.filter(function (w, i) {
    return !(w === "''" && i > 0 && /\d''$/.test(words[i - 1]));
  }).map(function (w) {
    return /\d''$/.test(w) ? w.slice(0, -2) + '"' : w;
  });
  words = words.filter(function (w, i) {
    return !(i > 0 && w === words[i - 1] && COLLAPSE_REPEATS.has(w));
  });
  // Brown moved , . ? ! after the closing quote ("that '' ?": ~6500 times,
  // the other order 11); the printed texts, mostly dialogue, had them
  // inside: "Why did you do that?"
  for (let i = 0; i + 1 < words.length; i++) {
    if (words[i] === "''" && QUOTE_INSIDE.has(words[i + 1])) {
      words[i] = words[i + 1];
      words[i + 1] = "''";
      i++;
    }
  }
  let out = '';
  let glueNext = true; // no space before the first word
  let singleOpen = false;
  let prev = null;
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    // A sentence ending in an abbreviation gets a second period token
    // ("Jr. ."); print it once.
    if (w === '.' && prev !== null && prev.length > 1 && prev.slice(-1) === '.') continue;
    const next = i + 1 < words.length ? words[i + 1] : null;
    let left = ATTACH_LEFT.has(w);
    let right = ATTACH_RIGHT.has(w);
    if (w === "'") {
      let closing;
      if (prev === null || ATTACH_RIGHT.has(prev)) closing = false;
      else if (next === null || ATTACH_LEFT.has(next)) closing = true;
      else closing = singleOpen;
      singleOpen = !closing;
      left = closing;
      right = !closing;
    }
    if (w === '``' || w === "''") w = '"';
    out += (glueNext || left ? '' : ' ') + w;
    glueNext = right;
    prev = words[i];
  }
  return out;
}

// One Brown file -> paragraphs of text. Paragraphs are blocks separated by
// blank lines; within one, each line is a sentence of word/TAG tokens.
//  - A headline (every tag ends in -hl, e.g. "Merger/nn-hl proposed/vbn-hl")
//    sits on its own line inside the next paragraph's block; it gets its own
//    paragraph so that it does not run into the sentence after it.
//  - Some sentences' final punctuation landed at the start of the next block
//    or line ("./." alone, ", fourth in the league"); it goes back onto the
//    paragraph it ends instead of opening a new one with ". ".
function brownParagraphs(raw) {
  const paras = []; // arrays of words
  let words = [];
  function flush() {
    if (words.length) paras.push(words);
    words = [];
  }
  raw.split(/\n[ \t]*\n/).forEach(function (block) {
    block.split('\n').forEach(function (line) {
      const toks = line.split(/\s+/).filter(Boolean).map(splitTag);
      if (toks.length === 0) return;
      // Leading punctuation closes whatever came before (even when it is
      // tagged as a headline, "./.-hl").
      const before = words.length ? words : paras.length ? paras[paras.length - 1] : null;
      let k = 0;
      while (before && k < toks.length && ATTACH_LEFT.has(toks[k][0])) before.push(toks[k++][0]);
      const rest = toks.slice(k);
      if (rest.length === 0) return;
      const headline = rest.every(function (t) { return /-hl$/.test(t[1]); });
      if (headline) flush();
      rest.forEach(function (t) { words.push(t[0]); });
      if (headline) flush();
    });
    flush();
  });
  return paras.map(detokenize);
}

function brown(dir) {
  const files = fs.readdirSync(dir).filter(function (f) { return /^c[a-r]\d\d$/.test(f); }).sort();
  if (files.length !== 500) die('brown: expected 500 corpus files (ca01..cr09), found ' + files.length);
  return files.map(function (f, i) {
    const paras = brownParagraphs(readUtf8(path.join(dir, f)));
    if (paras.length === 0) die('brown: ' + f + ' has no text');
    const split = i % 10 === 9 ? 'test' : i % 10 === 4 ? 'validation' : 'train';
    return { name: 'brown-' + f + '.txt', split: split, text: cleanText(paras.join('\n\n')) };
  });
}

// ------------------------------------------------------------------- output

function codePoints(s) {
  const m = s.match(/[\uD800-\uDBFF]/g);
  return s.length - (m ? m.length : 0);
}

function words(s) {
  const m = s.match(/\S+/g);
  return m ? m.length : 0;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const moby = mobyDick(opts.moby);
  const sources = [
    { label: 'Moby Dick', docs: moby.docs },
    { label: 'State of the Union', docs: sotu(opts.sotu) },
    { label: 'Brown', docs: brown(opts.brown) },
  ];

  SPLITS.forEach(function (s) { fs.mkdirSync(path.join(opts.out, s), { recursive: true }); });
  const names = {};
  function write(doc) {
    const rel = path.join(doc.split, doc.name);
    if (names[rel]) die('duplicate output file ' + rel);
    names[rel] = true;
    fs.writeFileSync(path.join(opts.out, rel), doc.text);
  }

  // stats[source][split] = {docs, chars, words}; the 'all' source is the total.
  const stats = {};
  function add(label, split, text) {
    if (!stats[label]) stats[label] = {};
    if (!stats[label][split]) stats[label][split] = { docs: 0, chars: 0, words: 0 };
    const st = stats[label][split];
    st.docs += 1;
    st.chars += codePoints(text);
    st.words += words(text);
  }
  sources.forEach(function (src) {
    src.docs.forEach(function (d) {
      write(d);
      add(src.label, d.split, d.text);
      add('all', d.split, d.text);
    });
  });
  moby.extra.forEach(write);

  const rows = [];
  sources.map(function (s) { return s.label; }).concat(['all']).forEach(function (label) {
    SPLITS.forEach(function (split) {
      const st = stats[label][split] || { docs: 0, chars: 0, words: 0 };
      rows.push([label === 'all' ? 'TOTAL' : label, split, st.docs, st.chars, st.words]);
    });
  });

  const md = [
    '# Corpus splits',
    '',
    'Generated by `scripts/fetch-corpus.sh` (do not edit; re-run it instead).',
    'Documents are plain UTF-8 text, paragraphs separated by a blank line.',
    '',
    '## Sources',
    '',
  ].concat(opts.sources.map(function (s) { return '- `' + s + '` (npm tarball, sha256)'; }))
    .concat([
      '',
      '## Rule (split by whole document)',
      '',
      SPLIT_RULE,
      '',
      '## Sizes',
      '',
      'Characters are Unicode code points; words are whitespace-separated.',
      'moby-dick-test.txt is not counted (it repeats the test chapters).',
      '',
      '| source | split | documents | characters | words |',
      '|---|---|---:|---:|---:|',
    ])
    .concat(rows.map(function (r) { return '| ' + r.join(' | ') + ' |'; }))
    .join('\n') + '\n';
  fs.writeFileSync(path.join(opts.out, 'SPLITS.md'), md);

  // Summary for the console: the totals per split, then per source.
  function pad(s, n) { s = String(s); return s.length >= n ? s : (s + ' '.repeat(n)).slice(0, n); }
  function lpad(s, n) { s = String(s); return s.length >= n ? s : (' '.repeat(n) + s).slice(-n); }
  console.log(pad('source', 20) + pad('split', 12) + lpad('docs', 6) + lpad('chars', 12) + lpad('words', 11));
  rows.forEach(function (r) {
    console.log(pad(r[0], 20) + pad(r[1], 12) + lpad(r[2], 6) + lpad(r[3], 12) + lpad(r[4], 11));
  });
  const mt = moby.extra[0];
  console.log('plus test/' + mt.name + ': ' + codePoints(mt.text) + ' chars (the Moby Dick test chapters joined)');
}

main();
