// Drives Debian's chromium (headless, through playwright-core: no browser download) against the
// dashboard of a running seckilld, for tests/e2e/test_dashboard.py. It talks to the test over
// stdin/stdout, one line each way, so that the test (Python threads) runs the storms:
//
//   node dashboard.js CONFIG_JSON
//     CONFIG: {url, token, userDataDir, screenshot, sale, sale2}
//   out "STEP <name> <json>"   the page reached a step; the test answers "GO" (or "ABORT") on stdin
//   out "DONE <json>"          everything seen; the screenshot is written
//   out "FAIL <message>"       and exit 1
//
// Every wait is bounded; a failure names what was awaited and what the page showed.
'use strict';
const readline = require('readline');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const WAIT = 8000; // ms, any single wait for the page

const lines = readline.createInterface({ input: process.stdin });
const pending = [];
const waiting = [];
lines.on('line', (l) => (waiting.length ? waiting.shift()(l) : pending.push(l)));
lines.on('close', () => { while (waiting.length) waiting.shift()('ABORT'); });
function nextLine() {
  return pending.length ? Promise.resolve(pending.shift()) : new Promise((r) => waiting.push(r));
}

async function step(name, info) {
  process.stdout.write(`STEP ${name} ${JSON.stringify(info || {})}\n`);
  const l = await nextLine();
  if (l.trim() !== 'GO') throw new Error(`step ${name}: the test said ${JSON.stringify(l)}`);
}

async function text(page, sel) {
  const el = await page.$(sel);
  return el ? (await el.textContent()).trim() : null;
}

// Waits until every selector shows its text; on timeout, says what each one showed.
async function expectTexts(page, want, what) {
  try {
    await page.waitForFunction((w) => Object.entries(w).every(([sel, t]) => {
      const el = document.querySelector(sel);
      return el && el.textContent.trim() === t;
    }), want, { timeout: WAIT, polling: 100 });
  } catch (e) {
    const seen = {};
    for (const sel of Object.keys(want)) seen[sel] = await text(page, sel);
    throw new Error(`${what}: wanted ${JSON.stringify(want)}, the page shows ${JSON.stringify(seen)}`);
  }
}

async function main() {
  const context = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 760 },
    deviceScaleFactor: 1,
    timeout: 20000,
  });
  const errors = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
    // chromium logs every 4xx as a console error; the test provokes 400, 401 and 409 on purpose
    page.on('console', (m) => {
      if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of (400|401|409)\b/.test(m.text())) {
        errors.push(`console: ${m.text()}`);
      }
    });
    page.on('request', (r) => {
      if (!r.url().startsWith(cfg.url.replace(/\/$/, '')) && !r.url().startsWith('data:')) {
        errors.push(`request outside the server: ${r.url()}`);
      }
    });

    await page.goto(cfg.url, { waitUntil: 'load', timeout: WAIT });

    // the token: a wrong one is refused, the right one opens the page
    await page.waitForSelector('#token-panel:not(.hidden)', { timeout: WAIT });
    await page.fill('#token-input', 'wrong-' + cfg.token);
    await page.click('#token-submit');
    await expectTexts(page, { '#token-msg': 'That token was refused.' }, 'a wrong token');
    await page.fill('#token-input', cfg.token);
    await page.click('#token-submit');
    await page.waitForSelector('#app:not(.hidden)', { timeout: WAIT });
    await expectTexts(page, { '#conn': 'live' }, 'the event stream');
    await expectTexts(page, { '#store': 'sqlite up' }, 'the store health');
    const kept = await page.evaluate(() => sessionStorage.getItem('seckill.admin_token'));
    if (kept !== cfg.token) throw new Error(`the token is not kept in sessionStorage (${kept})`);

    // the create form: the API's message on failure, then a sale
    await page.fill('#new-sale', cfg.sale);
    await page.fill('#new-stock', '-5');
    await page.click('#create-submit');
    await page.waitForFunction(() => /bad_request, HTTP 400/.test(document.querySelector('#create-msg').textContent),
      null, { timeout: WAIT });
    const badMsg = await text(page, '#create-msg');
    await page.fill('#new-stock', '40');
    await page.click('#create-submit');
    await expectTexts(page, { '#create-msg': `Created ${cfg.sale}.` }, 'creating a sale');
    const row = `tr[data-sale="${cfg.sale}"]`;
    await expectTexts(page, { [`${row} .stock`]: '40', [`${row} .sold`]: '0', [`${row} .remaining`]: '40' },
      'the new sale row');

    // storm 1 (the test's threads): the bar and the counters reach the exact sold count
    await step('storm', { sale: cfg.sale });
    const after = await nextLine(); // "SOLD <sold> <won> <sold_out>"
    const [, sold, won, soldOut] = after.trim().split(/\s+/);
    await expectTexts(page, {
      [`${row} .sold`]: sold, [`${row} .remaining`]: String(40 - Number(sold)), [`${row} .state`]: 'sold out',
      '#count-won': won, '#count-sold_out': soldOut,
    }, 'after the storm');
    await page.waitForFunction(([sel, n]) => {
      const bar = document.querySelector(sel + ' .bar');
      return bar && bar.getAttribute('data-sold') === n && bar.querySelector('.b-sold').style.width === '100%';
    }, [row, sold], { timeout: WAIT });

    // raise the stock from the row
    await page.fill(`${row} .stock-input`, '60');
    await page.click(`${row} .set-stock`);
    await expectTexts(page, { [`${row} .stock`]: '60', [`${row} .remaining`]: '20', [`${row} .state`]: 'open',
      [`${row} .row-msg`]: 'stock set to 60' }, 'raising the stock');
    // lowering it below what is sold shows the API's message
    await page.fill(`${row} .stock-input`, '10');
    await page.click(`${row} .set-stock`);
    await page.waitForFunction((sel) => /stock_below_taken, HTTP 409/.test(document.querySelector(sel).textContent),
      `${row} .row-msg`, { timeout: WAIT });
    const belowMsg = await text(page, `${row} .row-msg`);

    // a second sale with a per-user limit, a storm of repeat buyers, then "End now"
    await page.fill('#new-sale', cfg.sale2);
    await page.fill('#new-stock', '10');
    await page.fill('#new-limit', '1');
    await page.click('#create-submit');
    await expectTexts(page, { '#create-msg': `Created ${cfg.sale2}.` }, 'creating the second sale');
    await step('storm2', { sale: cfg.sale2 });
    const after2 = (await nextLine()).trim().split(/\s+/); // "SOLD2 <sold> <won> <user_limit>"
    const row2 = `tr[data-sale="${cfg.sale2}"]`;
    await expectTexts(page, { [`${row2} .sold`]: after2[1], '#count-won': after2[2], '#count-user_limit': after2[3] },
      'after the second storm');
    await page.click(`${row2} .end-now`);
    await expectTexts(page, { [`${row2} .state`]: 'ended', [`${row2} .row-msg`]: 'ended' }, 'ending a sale now');

    // let the chart show a little history, then the picture for the README
    await page.waitForTimeout(1200);
    await page.screenshot({ path: cfg.screenshot, fullPage: true });
    if (errors.length) throw new Error(errors.join('; '));
    const seen = {
      sold: await text(page, `${row} .sold`), won: await text(page, '#count-won'),
      soldOut: await text(page, '#count-sold_out'), userLimit: await text(page, '#count-user_limit'),
      badMsg, belowMsg, state2: await text(page, `${row2} .state`),
    };
    process.stdout.write(`DONE ${JSON.stringify(seen)}\n`);
  } finally {
    await context.close();
  }
}

main().then(() => process.exit(0), (e) => {
  process.stdout.write(`FAIL ${String(e && e.message || e).replace(/\n/g, ' ')}\n`);
  process.exit(1);
});
