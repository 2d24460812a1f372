// Chromium behind sdp-driver.mjs's browser adapter: Debian's /usr/bin/chromium (or CHROMIUM_BIN),
// launched by playwright-core. The tabs it hands out are Playwright Pages, whose API is the
// one the driver speaks (firefox.mjs reproduces the part of it the driver uses).

import { chromium } from 'playwright-core';

export const name = 'chromium';
export const executableEnv = 'CHROMIUM_BIN';
export const defaultExecutable = '/usr/bin/chromium';

// Flags from shared/TESTING.md. Playwright adds --headless and its own automation flags.
export const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  // A softphone plays the far end in an <audio autoplay> element without a user gesture.
  '--autoplay-policy=no-user-gesture-required',
];

// Starts Chromium with `profileDir` as its --user-data-dir. `onUnexpectedClose` is called if
// the browser goes away (the driver ignores it while it is closing the browser itself).
export async function launch({ executablePath, profileDir, onUnexpectedClose }) {
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath,
    headless: true,
    args: FLAGS,
    timeout: 20000,
    // Gateways under test serve WSS and the demo page with self-signed certificates.
    ignoreHTTPSErrors: true,
  });
  context.on('close', () => onUnexpectedClose());
  const firstPage = context.pages()[0] ?? await context.newPage();
  return {
    firstPage,
    newPage: () => context.newPage(),
    // Chromium's version, e.g. "156.0.8078.79" (the user agent when Playwright has no
    // Browser object for a persistent context).
    version: async (page) => (context.browser() ? context.browser().version() : page.evaluate(() => navigator.userAgent)),
    close: () => context.close(),
  };
}
