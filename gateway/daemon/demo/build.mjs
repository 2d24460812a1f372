// Builds dist/ from src/: app.js bundled with JsSIP (CommonJS, so it must be bundled for the
// browser), index.html and style.css copied. The gateway embeds dist/ at compile time
// (gateway/daemon/build.rs). Usage: npm run build
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const dist = join(here, 'dist');

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(src, 'app.js')],
  outfile: join(dist, 'app.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome100', 'firefox100', 'safari15'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});
for (const file of ['index.html', 'style.css']) {
  await copyFile(join(src, file), join(dist, file));
}
console.log(`demo page built in ${dist}`);
