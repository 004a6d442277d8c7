// The TypeScript declarations match the code: the same exports, the same
// public members of FootfallClient and TransportLadder, the options the
// client reads, and the hook's options and result. The declarations are read
// with the TypeScript compiler API, the code by importing it (the hook runs on
// the fake React of web/testing) and, for the option names, from its source.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { register } from 'node:module';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const web = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const clientDts = web('footfall-client.d.ts');
const hookDts = web('react/useVisitorCount.d.ts');

const program = ts.createProgram([clientDts, hookDts], { strict: true, noEmit: true, types: [], lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'] });
const checker = program.getTypeChecker();

function moduleExports(file) {
  const sf = program.getSourceFile(file);
  assert.ok(sf, `${file} is in the program`);
  const diags = ts.getPreEmitDiagnostics(program, sf);
  assert.deepEqual(diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')), [], `${file} compiles`);
  return checker.getExportsOfModule(checker.getSymbolAtLocation(sf));
}

const valueFlags = ts.SymbolFlags.Function | ts.SymbolFlags.Class | ts.SymbolFlags.Variable;
const sorted = (xs) => [...new Set(xs)].sort();

function declaredValues(file) {
  const isValue = (s) => ((s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s).flags & valueFlags) !== 0;
  return sorted(moduleExports(file).filter(isValue).map((s) => s.name));
}

function exported(file, name) {
  const s = moduleExports(file).find((x) => x.name === name);
  assert.ok(s, `${file} declares ${name}`);
  return s;
}

/** The property names of an exported interface or type. */
function typeProps(file, name) {
  const s = exported(file, name);
  return sorted(checker.getDeclaredTypeOfSymbol(s).getProperties().map((p) => p.name));
}

/** The public instance members of an exported class. */
function classMembers(file, name) {
  const s = exported(file, name);
  return sorted(checker.getDeclaredTypeOfSymbol(s).getProperties().map((p) => p.name));
}

const client = await import('../footfall-client.js');

/** Getters and methods of a class, and the fields an instance has. */
function runtimeMembers(cls, instance) {
  const proto = Object.getOwnPropertyNames(cls.prototype).filter((n) => n !== 'constructor');
  return sorted([...proto, ...Object.keys(instance)]);
}

test('footfall-client.d.ts declares exactly what footfall-client.js exports', () => {
  assert.deepEqual(declaredValues(clientDts), sorted(Object.keys(client)));
});

test('FootfallClient: declared members are the instance members', () => {
  const c = new client.FootfallClient({ community: 'c', url: 'http://gw.test', document: null });
  assert.deepEqual(classMembers(clientDts, 'FootfallClient'), runtimeMembers(client.FootfallClient, c));
});

test('TransportLadder: declared members are the instance members', () => {
  const l = new client.TransportLadder();
  assert.deepEqual(classMembers(clientDts, 'TransportLadder'), runtimeMembers(client.TransportLadder, l));
});

test('ClientOptions: the options the client reads, and its JSDoc lists', () => {
  const src = readFileSync(web('footfall-client.js'), 'utf8');
  const read = sorted([...src.matchAll(/\boptions\??\.(\w+)/g)].map((m) => m[1]));
  const declared = typeProps(clientDts, 'ClientOptions');
  for (const name of read) assert.ok(declared.includes(name), `the client reads options.${name}, which ClientOptions does not declare`);
  const typedef = src.match(/@typedef \{object\} ClientOptions\n([\s\S]*?)\*\//);
  assert.ok(typedef, 'footfall-client.js has a ClientOptions typedef');
  const jsdoc = sorted([...typedef[1].matchAll(/@property \{[^\n]*\} \[?(\w+)\]?/g)].map((m) => m[1]));
  assert.deepEqual(declared, jsdoc, 'ClientOptions in the .d.ts and in the JSDoc');
});

test('FootfallEvents: one listener type per event the client emits', () => {
  const src = readFileSync(web('footfall-client.js'), 'utf8');
  const emitted = sorted([...src.matchAll(/#emit\('(\w+)'/g)].map((m) => m[1]));
  assert.deepEqual(typeProps(clientDts, 'FootfallEvents'), emitted);
});

test('useVisitorCount.d.ts matches the hook: exports, options, result', async () => {
  register('../testing/react-loader.mjs', import.meta.url);
  const hook = await import('../react/useVisitorCount.js');
  const { renderHook } = await import('../testing/fake-react.mjs');
  const { fakeWebSocket } = await import('../testing/fakes.mjs');
  assert.deepEqual(declaredValues(hookDts), sorted(Object.keys(hook)));

  // Its own options are the ones it takes apart; the rest go to the client.
  const src = readFileSync(web('react/useVisitorCount.js'), 'utf8');
  const destructured = src.match(/const \{([^}]*)\.\.\.clientOptions \} = options/);
  assert.ok(destructured, 'the hook destructures its options');
  const own = sorted(destructured[1].split(',').map((s) => s.trim().split(/[\s=]/)[0]).filter(Boolean));
  const declared = typeProps(hookDts, 'VisitorCountOptions');
  const clientOpts = typeProps(clientDts, 'ClientOptions').filter((n) => n !== 'community');
  assert.deepEqual(sorted(declared.filter((n) => !clientOpts.includes(n))), sorted(own.filter((n) => !clientOpts.includes(n))));
  for (const n of own) assert.ok(declared.includes(n), `the hook reads option ${n}, not declared`);
  for (const n of clientOpts) assert.ok(declared.includes(n), `client option ${n} cannot be passed through the hook's types`);

  const h = renderHook(() => hook.useVisitorCount('c', { url: 'http://gw.test', token: 't', WebSocket: fakeWebSocket(), document: null }));
  assert.deepEqual(sorted(Object.keys(h.result)), typeProps(hookDts, 'VisitorCountState'));
  h.unmount();
});
