// Firefox behind sdp-driver.mjs's browser adapter: Debian's /usr/bin/firefox-esr (or FIREFOX_BIN),
// launched and driven by puppeteer-core over WebDriver BiDi (Playwright only drives its own
// patched Firefox build, which we never download). The tabs it hands out are wrapped in
// FirefoxTab, which offers the part of Playwright's Page API the driver uses, so the driver's
// commands read the same for both browsers.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

export const name = 'firefox';
export const executableEnv = 'FIREFOX_BIN';
export const defaultExecutable = '/usr/bin/firefox-esr';

// Written to the profile's user.js (puppeteer adds its own automation prefs, and Firefox's
// remote agent its recommended ones, on top).
export const PREFS = {
  // Fake camera (a changing coloured picture) and microphone (a 1 kHz tone), no prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Every site counts as allowed to use camera and microphone, as a softphone the user
  // trusts is. Without it Firefox gathers ICE candidates only on the address of the default
  // route, and a loopback-only network namespace has no default route: no candidate at all.
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  // Loopback candidates (the namespace has nothing else), as IP addresses, not mDNS names.
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // A softphone plays the far end in an <audio autoplay> element without a user gesture.
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.autoplay.block-webaudio': false,
  // No proxy, whatever the environment says.
  'network.proxy.type': 0,
  // No network chatter: updates, telemetry, studies, captive portal and connectivity checks,
  // safe browsing, remote settings, push, prefetching, DNS over HTTPS, geolocation, plugins.
  'app.update.auto': false,
  'app.update.disabledForTesting': true,
  'app.update.checkInstallTime': false,
  'app.normandy.enabled': false,
  'app.normandy.api_url': '',
  'app.shield.optoutstudies.enabled': false,
  'nimbus.rollouts.enabled': false,
  'messaging-system.rsexperimentloader.enabled': false,
  'toolkit.telemetry.enabled': false,
  'toolkit.telemetry.unified': false,
  'toolkit.telemetry.archive.enabled': false,
  'toolkit.telemetry.server': '',
  'toolkit.telemetry.newProfilePing.enabled': false,
  'toolkit.telemetry.shutdownPingSender.enabled': false,
  'toolkit.telemetry.firstShutdownPing.enabled': false,
  'toolkit.telemetry.updatePing.enabled': false,
  'toolkit.telemetry.bhrPing.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'datareporting.healthreport.uploadEnabled': false,
  'datareporting.usage.uploadEnabled': false,
  'browser.ping-centre.telemetry': false,
  'browser.newtabpage.enabled': false,
  'browser.newtabpage.activity-stream.feeds.telemetry': false,
  'browser.newtabpage.activity-stream.telemetry': false,
  'browser.topsites.contile.enabled': false,
  'network.captive-portal-service.enabled': false,
  'captivedetect.canonicalURL': '',
  'network.connectivity-service.enabled': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.safebrowsing.downloads.enabled': false,
  'browser.safebrowsing.downloads.remote.enabled': false,
  'browser.safebrowsing.blockedURIs.enabled': false,
  'browser.safebrowsing.provider.google4.updateURL': '',
  'browser.safebrowsing.provider.mozilla.updateURL': '',
  'services.settings.server': 'data:,#remote-settings-dummy/v1',
  'security.remote_settings.crlite_filters.enabled': false,
  'security.remote_settings.intermediates.enabled': false,
  'security.OCSP.enabled': 0,
  'extensions.update.enabled': false,
  'extensions.systemAddon.update.enabled': false,
  'extensions.blocklist.enabled': false,
  'extensions.getAddons.cache.enabled': false,
  'media.gmp-manager.updateEnabled': false,
  'media.gmp-manager.url': '',
  'dom.push.connection.enabled': false,
  'identity.fxaccounts.enabled': false,
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
  'network.predictor.enabled': false,
  'network.http.speculative-parallel-limit': 0,
  'network.trr.mode': 5,
  'browser.region.network.url': '',
  'browser.region.update.enabled': false,
  'geo.provider.network.url': '',
  'browser.shell.checkDefaultBrowser': false,
};

// Starts Firefox with `profileDir` as its profile. HOME (and so Firefox's caches and
// ~/.mozilla) is a folder inside the profile, so nothing outside it is touched and removing
// the profile removes everything. `onUnexpectedClose` is called if the browser goes away.
export async function launch({ executablePath, profileDir, trace, onUnexpectedClose }) {
  const home = join(profileDir, '.home');
  mkdirSync(home);
  const browser = await puppeteer.launch({
    browser: 'firefox',
    protocol: 'webDriverBiDi',
    executablePath,
    headless: true,
    userDataDir: profileDir,
    extraPrefsFirefox: PREFS,
    // Gateways under test serve WSS and the demo page with self-signed certificates.
    acceptInsecureCerts: true,
    defaultViewport: null,
    timeout: 20000,
    // The driver handles its signals itself (and closes the browser on them).
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    env: {
      ...process.env,
      HOME: home,
      XDG_CACHE_HOME: join(home, '.cache'),
      XDG_CONFIG_HOME: join(home, '.config'),
      MOZ_CRASHREPORTER_DISABLE: '1',
    },
  });
  // puppeteer reads Firefox's stdout and stderr itself (never onto the protocol channel);
  // traced, the stderr lines after startup are echoed on ours.
  const stderr = browser.process()?.stderr;
  if (trace && stderr) {
    createInterface({ input: stderr }).on('line', (l) => process.stderr.write(`[firefox] ${l}\n`));
  }
  browser.on('disconnected', () => onUnexpectedClose());
  const pages = await browser.pages();
  const firstPage = new FirefoxTab(pages[0] ?? await browser.newPage());
  return {
    firstPage,
    newPage: async () => new FirefoxTab(await browser.newPage()),
    // "Firefox/153.8.0" (puppeteer says "firefox/153.8.0").
    version: async () => (await browser.version()).replace(/^firefox\//i, 'Firefox/'),
    close: () => browser.close(),
  };
}

// The part of Playwright's Page API sdp-driver.mjs uses, over a puppeteer Page. Element
// commands wait (up to `timeout` ms) as Playwright's do: for the element to be attached,
// visible and enabled (puppeteer's locators), and a <select> for the option.
class FirefoxTab {
  constructor(page) {
    this.page = page;
  }

  // 'crash', 'pageerror' and 'console' (messages with type() and text()), as Playwright's.
  on(event, fn) {
    if (event === 'crash') {
      this.page.on('error', fn);
    } else if (event === 'pageerror') {
      this.page.on('pageerror', fn);
    } else if (event === 'console') {
      this.page.on('console', (m) => fn({ type: () => (m.type() === 'warn' ? 'warning' : m.type()), text: () => m.text() }));
    } else {
      throw new Error('FirefoxTab: no event ' + event);
    }
    return this;
  }

  addInitScript(source) {
    return this.page.evaluateOnNewDocument(source);
  }

  async goto(url, { timeout } = {}) {
    await this.page.goto(url, { timeout: timeout ?? 30000, waitUntil: 'load' });
  }

  title() {
    return this.page.title();
  }

  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  #locate(selector, timeout) {
    return this.page.locator(selector).setTimeout(timeout);
  }

  async fill(selector, value, { timeout }) {
    await this.#locate(selector, timeout).fill(value);
  }

  async click(selector, { timeout }) {
    await this.#locate(selector, timeout).click();
  }

  async setChecked(selector, checked, { timeout }) {
    const handle = await this.#locate(selector, timeout).waitHandle();
    try {
      if ((await handle.evaluate((e) => e.checked)) !== checked) {
        await this.#locate(selector, timeout).click();
      }
      if ((await handle.evaluate((e) => e.checked)) !== checked) {
        throw new Error(`clicking ${selector} did not make it ${checked ? 'checked' : 'unchecked'}`);
      }
    } finally {
      await handle.dispose().catch(() => {});
    }
  }

  // Playwright's selectOption(selector, string): the option whose value, else label, matches.
  async selectOption(selector, value, { timeout }) {
    const deadline = Date.now() + timeout;
    const handle = await this.#locate(selector, timeout).waitHandle();
    try {
      await this.page.waitForFunction(
        (el, v) => el instanceof HTMLSelectElement && [...el.options].some((o) => o.value === v || o.label === v),
        { timeout: Math.max(1, deadline - Date.now()), polling: 50 }, handle, value,
      ).catch((e) => { throw new Error(`${selector} has no option ${JSON.stringify(value)} (${e.message})`); });
      await handle.evaluate((el, v) => {
        const options = [...el.options];
        const o = options.find((x) => x.value === v) ?? options.find((x) => x.label === v);
        el.value = o.value;
        el.dispatchEvent(new Event('input', { bubbles: true }));
        el.dispatchEvent(new Event('change', { bubbles: true }));
      }, value);
    } finally {
      await handle.dispose().catch(() => {});
    }
  }

  // Resolves to a handle whose jsonValue() is the truthy value `fn(arg)` returned.
  waitForFunction(fn, arg, { timeout, polling }) {
    return this.page.waitForFunction(fn, { timeout, polling: polling ?? 'raf' }, arg);
  }

  async innerText(selector, { timeout }) {
    const handle = await this.page.waitForSelector(selector, { timeout });
    try {
      return await handle.evaluate((e) => e.innerText);
    } finally {
      await handle.dispose().catch(() => {});
    }
  }

  close() {
    return this.page.close();
  }
}
