// /docs in a real browser: Debian's headless Chromium, driven by
// playwright-core (web/node_modules), against a running server.
//
//   TLLM_BASE=http://127.0.0.1:8080 node tests/browser/docs.test.mjs
//
// TLLM_BASE is the API's mount point (tests/integration/test_browser.py
// starts a server and runs this). The page must render every operation of
// docs/openapi.json, run "Try it out" on GET /traces and show a 200, and
// fetch nothing from another origin. A screenshot goes to
// build/docs-screenshot.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCREENSHOT = join(REPO, 'build', 'docs-screenshot.png');
const CHROMIUM = '/usr/bin/chromium';
// Served under this name (mapped to the server's address) rather than
// 127.0.0.1: Swagger UI treats localhost specially (it skips its online
// validator badge there), and the page must not reach out from anywhere.
const ALIAS_HOST = 'tracellm.test';
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head',
                      'patch', 'trace'];

// playwright-core as installed by the project's scripts (npm ci in web/).
const require = createRequire(join(REPO, 'web', 'package.json'));
const { chromium } = require('playwright-core');

/** The mount point as the browser will reach it. */
function browserBase() {
  const raw = process.env.TLLM_BASE;
  assert.ok(raw, 'set TLLM_BASE to the server\'s mount point URL');
  const url = new URL(raw.replace(/\/+$/, ''));
  const realHost = url.hostname;
  if (['127.0.0.1', 'localhost'].includes(realHost)) {
    url.hostname = ALIAS_HOST;
  }
  return { base: url.href.replace(/\/+$/, ''), realHost,
           aliasHost: url.hostname };
}

/** "METHOD /path" of every operation of the document. */
function documentOperations() {
  const doc = JSON.parse(readFileSync(join(REPO, 'docs', 'openapi.json')));
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) {
      if (HTTP_METHODS.includes(method)) {
        ops.push(`${method.toUpperCase()} ${path}`);
      }
    }
  }
  return ops.sort();
}

async function launch(realHost) {
  const profile = mkdtempSync(join(tmpdir(), 'tllm-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    `--host-resolver-rules=MAP ${ALIAS_HOST} ${realHost}`,
  ];
  // launchPersistentContext is how playwright takes a --user-data-dir: a
  // fresh one per run, so no state leaks between runs.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args,
    viewport: { width: 1280, height: 900 },
  });
  return { context, profile };
}

/** Abort and remember every request that leaves the server's origin. */
async function confineToOrigin(context, origin) {
  const foreign = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) {
      return route.continue();
    }
    foreign.push(url);
    return route.abort();
  });
  return foreign;
}

/** "METHOD /path" of each operation block Swagger UI rendered. */
async function renderedOperations(page) {
  return page.$$eval('.opblock', (blocks) => blocks.map((b) => {
    const method = b.querySelector('.opblock-summary-method');
    const path = b.querySelector('.opblock-summary-path');
    // data-path is the template as written; the text has zero-width
    // spaces Swagger UI inserts for line breaking.
    const p = path.getAttribute('data-path')
      || path.textContent.replace(/\u200b/g, '');
    return `${method.textContent.trim().toUpperCase()} ${p.trim()}`;
  }));
}

test('Swagger UI at /docs renders the document and runs GET /traces',
  { timeout: 180_000 }, async (t) => {
    const { base, realHost } = browserBase();
    const origin = new URL(base).origin;
    const { context, profile } = await launch(realHost);
    t.after(async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    });
    const foreign = await confineToOrigin(context, origin);
    const page = context.pages()[0] || await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));

    await t.test('the page renders every operation', async () => {
      const r = await page.goto(`${base}/docs`);
      assert.equal(r.status(), 200);
      const expected = documentOperations();
      await page.waitForSelector('.swagger-ui .info .title');
      await page.waitForFunction(
        (n) => document.querySelectorAll('.opblock').length >= n,
        expected.length);
      const title = await page.textContent('.swagger-ui .info .title');
      assert.match(title, /TraceLLM API/);
      assert.deepEqual((await renderedOperations(page)).sort(), expected);
      // a document Swagger UI could not parse shows an errors pane
      assert.equal(await page.locator('.swagger-ui .errors-wrapper').count(),
                   0, 'Swagger UI reports errors in the document');
    });

    await t.test('Try it out on GET /traces shows 200', async () => {
      const block = page.locator('.opblock.opblock-get', {
        has: page.locator('.opblock-summary-path[data-path="/traces"]'),
      });
      await block.locator('.opblock-summary-control').click();
      await block.locator('button.try-out__btn').click();
      await block.locator('button.execute').click();
      const status = block.locator(
        '.live-responses-table .response .response-col_status').first();
      await status.waitFor();
      assert.equal((await status.textContent()).trim(), '200');
      const url = await block.locator('.request-url pre').textContent();
      assert.ok(url.startsWith(`${base}/traces`), `request URL ${url}`);
      const body = await block.locator(
        '.live-responses-table .response-col_description pre').first()
        .textContent();
      assert.ok(JSON.parse(body).items, `response body ${body}`);
      await status.scrollIntoViewIfNeeded();
    });

    await t.test('screenshot and a page that stayed on its origin', async () => {
      mkdirSync(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      assert.deepEqual(foreign, [], 'requests left the server\'s origin');
      assert.deepEqual(pageErrors, [], 'errors in the page');
    });
  });
