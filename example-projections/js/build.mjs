// Build every `*/app.js` of this folder into a component: `npm run build` (after `npm install`)
// writes `dist/NAME.wasm`; `node build.mjs OUT [NAME...] [--projects DIR]` writes into OUT (only
// the named ones), from DIR's `*/app.js` when given. QuickJS (componentize-qjs), importing WASI:
// the host gives it locked down, with the clock at the event's timestamp.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let source = here;
const at = args.indexOf('--projects');
if (at >= 0) {
  if (at + 1 >= args.length) {
    console.error('build.mjs: --projects needs a folder');
    process.exit(2);
  }
  source = resolve(args[at + 1]);
  args.splice(at, 2);
}
const out = resolve(args[0] ?? join(here, 'dist'));
const wanted = new Set(args.slice(1));
const root = join(here, '..', '..');
const wit = join(root, 'wit');
const tool = join(here, 'node_modules', '.bin', 'componentize-qjs');
if (!existsSync(tool)) {
  console.error(`${tool} is missing: run \`npm ci\` in ${here} (scripts/setup does)`);
  process.exit(1);
}
mkdirSync(out, { recursive: true });
for (const name of readdirSync(source)) {
  const app = join(source, name, 'app.js');
  if (!existsSync(app) || (wanted.size && !wanted.has(name))) continue;
  const file = join(out, `${name.replaceAll('-', '_')}.wasm`);
  // The module root is the repository, so a project outside this folder can import `sdk/`.
  execFileSync(tool, ['--wit', wit, '--js', app, '--module-root', root, '-n', 'projection', '--sync', '-o', file], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  console.log(file);
}
