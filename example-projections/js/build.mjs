// Build every `*/app.js` of this folder into a component: `npm run build` (after `npm install`)
// writes `dist/NAME.wasm`; `node build.mjs OUT [NAME...]` writes into OUT (only the named ones). QuickJS with its WASI imports
// stubbed: the component imports only the Refold contract, like a Rust projection.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, 'dist'));
const wanted = new Set(process.argv.slice(3));
const wit = join(here, '..', '..', 'wit');
const tool = join(here, 'node_modules', '.bin', 'componentize-qjs');
if (!existsSync(tool)) {
  console.error(`${tool} is missing: run \`npm install\` in ${here} (scripts/setup does)`);
  process.exit(1);
}
mkdirSync(out, { recursive: true });
for (const name of readdirSync(here)) {
  const app = join(here, name, 'app.js');
  if (!existsSync(app) || (wanted.size && !wanted.has(name))) continue;
  const file = join(out, `${name.replaceAll('-', '_')}.wasm`);
  execFileSync(tool, ['--wit', wit, '--js', app, '--module-root', here, '-n', 'projection', '--sync', '--stub-wasi', '-o', file], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  console.log(file);
}
