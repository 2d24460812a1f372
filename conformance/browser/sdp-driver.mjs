#!/usr/bin/env node
// Drives a real headless browser's RTCPeerConnection over a JSON line protocol, for Estuary's
// conformance tests (the Rust side is conformance/src/browser.rs). The browser is Chromium
// (Debian's, through playwright-core: chromium.mjs) or Firefox (Debian's firefox-esr, through
// puppeteer-core over WebDriver BiDi: firefox.mjs), chosen by ESTUARY_BROWSER; everything
// below works the same with both.
//
// stdin: one JSON object per line; stdout: one JSON object per line. The first line written is
// `{"ready":true,"browser":"chromium"|"firefox","version":...,"userAgent":...,"profile":"<dir>",
// ...}` once the browser is up, where version is Chromium's ("156.0.8078.79") or
// "Firefox/153.8.0" (or `{"ready":false,"error":...}` and exit 1). Then each command gets exactly
// one reply, in order, echoing the command's `id` if it had one. A reply is `{"ok":true,...}` or
// `{"ok":false,"error":"<message verbatim>","name":"<exception name>"}`. Errors never end the
// driver; it exits (closing the browser and removing its profile) when stdin closes, on
// `{"cmd":"quit"}`, or on SIGTERM/SIGINT/SIGHUP.
//
// Commands:
//   {"cmd":"new","pc":"a","config":{...}?}           RTCPeerConnection with the browser's defaults
//                                                    (no ICE servers) or the given RTCConfiguration
//   {"cmd":"offer","pc":"a","media":["audio","video","data"],
//    "codecs":{"audio":["opus"],"video":["VP8"]}?,   setCodecPreferences per kind ("name" or
//                                                    "name/clock" or "name/clock/channels")
//    "tracks":"none"|"fake"?,                        "fake": send fake-device getUserMedia tracks
//    "gatherTimeoutMs":3000?}                        -> {"ok":true,"sdp":...,"gathering":state}
//   {"cmd":"remote-answer","pc":"a","sdp":...}       -> {"ok":true}
//   {"cmd":"remote-offer","pc":"b","sdp":..., "codecs"?, "tracks"?, "gatherTimeoutMs"?}
//                                                    -> {"ok":true,"sdp":answer,"gathering":state}
//   {"cmd":"stats","pc":"a"}                         -> {"ok":true,"stats":{states, rtp, pairs}}
//   {"cmd":"video-frame","pc":"a","track":"remote"|"local","timeoutMs":5000?}
//                                                    -> {"ok":true,"width","height","meanLuma"}:
//                                                    one frame of the received (or sent) video
//                                                    track drawn on a canvas, mean BT.601 luma
//   {"cmd":"dtmf","pc":"a","tones":"123","duration":100?,"gap":70?}
//                                                    RTCDTMFSender.insertDTMF on the audio sender
//   {"cmd":"close","pc":"a"}, {"cmd":"ping"}, {"cmd":"quit"}
//
// Web pages (a softphone under test, e.g. the gateway's demo page), each a named tab whose
// RTCPeerConnections are tracked so their stats can be read:
//   {"cmd":"page-open","page":"p","url":...}         new tab, load url (certificate errors are
//                                                    ignored: test gateways are self-signed)
//   {"cmd":"page-fill","page":"p","selector":...,"value":...}
//   {"cmd":"page-select","page":"p","selector":...,"value":...}   (a <select>'s option)
//   {"cmd":"page-check","page":"p","selector":...,"checked":bool}
//   {"cmd":"page-click","page":"p","selector":...}
//   {"cmd":"page-wait","page":"p","selector":...,"attr":"data-state","values":[...],
//    "timeoutMs":15000}                               -> {"ok":true,"value":...} once the attribute
//                                                    has one of the values, else ok:false with
//                                                    the last value seen
//   {"cmd":"page-text","page":"p","selector":...}    -> {"ok":true,"text":innerText}
//   {"cmd":"page-stats","page":"p"}                  -> stats (as "stats") of the tab's newest
//                                                    RTCPeerConnection
//   {"cmd":"page-video-frame","page":"p","selector":"#remote-video","timeoutMs":5000?}
//                                                    -> as video-frame, of a <video> element
//                                                    the page plays itself
//   {"cmd":"page-close","page":"p"}
//
// The offer/answer SDP returned is pc.localDescription.sdp after ICE gathering completed (or
// gatherTimeoutMs passed: "gathering" says which), so it carries the browser's host candidates.
//
// Environment: ESTUARY_BROWSER=chromium|firefox (default chromium), CHROMIUM_BIN (default
// /usr/bin/chromium), FIREFOX_BIN (default /usr/bin/firefox-esr), ESTUARY_TRACE_BROWSER=1 (page
// console, protocol lines and Firefox's own stderr on stderr). Every process of the browser
// has ESTUARY_BROWSER_PROFILE=<profile> in its environment (the profile is also on the main
// process's command line), which is how the Rust side finds them all.

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const trace = process.env.ESTUARY_TRACE_BROWSER === '1';
const BROWSER = process.env.ESTUARY_BROWSER || 'chromium';
// The per-browser launch and tab plumbing: each module exports name, executableEnv,
// defaultExecutable and launch(), whose tabs offer the part of Playwright's Page API used here
// (see chromium.mjs and firefox.mjs).
const ADAPTERS = { chromium: './chromium.mjs', firefox: './firefox.mjs' };
// The browser's name in the page's own error messages.
const LABEL = { chromium: 'Chromium', firefox: 'Firefox' }[BROWSER] ?? BROWSER;
let executablePath = null;

// stdout is the protocol channel: nothing else may write there.
const out = process.stdout;
console.log = (...a) => console.error(...a);
console.info = console.log;
console.debug = console.log;
function reply(obj) {
  const line = JSON.stringify(obj);
  if (trace) process.stderr.write(`[driver] < ${line.length > 300 ? line.slice(0, 300) + '...' : line}\n`);
  out.write(line + '\n');
}

// getStats of one RTCPeerConnection, summarised: its states, RTP streams, nominated candidate
// pairs, DTLS transports and data channels. Source text, evaluated in the driver page and in
// every tab opened with page-open.
const SUMMARIZE = `async (pc, channels) => {
  const num = (v) => (typeof v === 'number' ? v : undefined);
  const report = await pc.getStats();
  const codecs = new Map();
  report.forEach(r => { if (r.type === 'codec') codecs.set(r.id, r.mimeType + '/' + r.clockRate); });
  const rtp = [], pairs = [], transports = [];
  report.forEach(r => {
    if (r.type === 'inbound-rtp' || r.type === 'outbound-rtp') {
      rtp.push({ type: r.type, kind: r.kind, mid: r.mid, ssrc: r.ssrc, codec: codecs.get(r.codecId),
                 packets: num(r.packetsReceived ?? r.packetsSent), bytes: num(r.bytesReceived ?? r.bytesSent),
                 packetsLost: num(r.packetsLost), jitter: num(r.jitter), audioLevel: num(r.audioLevel),
                 totalAudioEnergy: num(r.totalAudioEnergy), framesDecoded: num(r.framesDecoded),
                 framesEncoded: num(r.framesEncoded), frameWidth: num(r.frameWidth),
                 frameHeight: num(r.frameHeight) });
    } else if (r.type === 'remote-inbound-rtp' || r.type === 'remote-outbound-rtp') {
      // Built from the far end's RTCP: its report blocks about our stream (remote-inbound)
      // and its sender reports (remote-outbound).
      rtp.push({ type: r.type, kind: r.kind, ssrc: r.ssrc, packets: num(r.packetsSent),
                 packetsLost: num(r.packetsLost), fractionLost: num(r.fractionLost), jitter: num(r.jitter),
                 roundTripTime: num(r.roundTripTime), rttMeasurements: num(r.roundTripTimeMeasurements),
                 reports: num(r.reportsSent) });
    } else if (r.type === 'candidate-pair' && r.nominated) {
      const l = report.get(r.localCandidateId), rm = report.get(r.remoteCandidateId);
      pairs.push({ state: r.state, local: l && (l.address + ':' + l.port), remote: rm && (rm.address + ':' + rm.port),
                   bytesSent: num(r.bytesSent), bytesReceived: num(r.bytesReceived),
                   requestsSent: num(r.requestsSent), responsesReceived: num(r.responsesReceived) });
    } else if (r.type === 'transport') {
      transports.push({ dtlsState: r.dtlsState, iceState: r.iceState, srtpCipher: r.srtpCipher,
                        tlsVersion: r.tlsVersion, dtlsRole: r.dtlsRole });
    }
  });
  return {
    signalingState: pc.signalingState, iceGatheringState: pc.iceGatheringState,
    iceConnectionState: pc.iceConnectionState, connectionState: pc.connectionState,
    rtp, pairs, transports,
    dataChannels: (channels || []).map(d => ({ label: d.label, readyState: d.readyState })) };
}`;

// Installed before any script of a page-open tab: every RTCPeerConnection the page makes is
// remembered (a subclass, so the page sees the real API), and the stats summary is at hand.
// One frame of a playing <video> element drawn on a canvas: its size and mean BT.601 luma.
// Source text, evaluated in the driver page and in every tab opened with page-open.
const FRAME_OF = `async (el, ms, what) => {
  const deadline = Date.now() + ms;
  while ((el.videoWidth === 0 || el.readyState < 2) && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 50));
  }
  if (el.videoWidth === 0) throw new Error('no frame of ' + what + ' was rendered');
  // A few more frames, so the picture is not the first one after a keyframe wait.
  await new Promise(r => setTimeout(r, 300));
  const canvas = document.createElement('canvas');
  canvas.width = el.videoWidth;
  canvas.height = el.videoHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(el, 0, 0);
  const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
  return { width: canvas.width, height: canvas.height, meanLuma: sum / (d.length / 4) };
}`;

const TRACKER = `(() => {
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  const pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); pcs.push(this); }
  };
  window.__estuaryPcs = pcs;
  window.__estuarySummarize = ${SUMMARIZE};
  window.__estuaryFrameOf = ${FRAME_OF};
})();`;

// The driver page, served by the driver itself on 127.0.0.1 (in the browser's network
// namespace). http://127.0.0.1 is a secure context (about:blank is not), so getUserMedia is
// available.
const PAGE_PATH = '/estuary-sdp-driver.html';
const PAGE_HTML = `<!doctype html><meta charset="utf-8"><title>estuary sdp driver</title>
<script>
(() => {
  const pcs = new Map();
  let fakeStream = null;

  function fail(e) {
    return { ok: false, error: (e && e.message !== undefined) ? String(e.message) : String(e),
             name: (e && e.name) ? String(e.name) : 'Error' };
  }
  function getPc(name) {
    const pc = pcs.get(name);
    if (!pc) throw new Error('no peer connection named ' + JSON.stringify(name));
    return pc;
  }
  async function fakeTracks() {
    if (!fakeStream) {
      // Voice processing off: in an echo test the echo canceller would remove the fake
      // microphone's beep, which is exactly what comes back.
      fakeStream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
        video: true,
      });
    }
    return fakeStream;
  }
  function preferredCodecs(kind, wanted) {
    const caps = RTCRtpReceiver.getCapabilities(kind);
    if (!caps) throw new Error('no receiver capabilities for ' + kind);
    const picked = [];
    for (const w of wanted) {
      const [name, clock, channels] = String(w).split('/');
      const hits = caps.codecs.filter(c =>
        c.mimeType.toLowerCase() === (kind + '/' + name).toLowerCase() &&
        (clock === undefined || c.clockRate === Number(clock)) &&
        (channels === undefined || (c.channels || 1) === Number(channels)));
      if (hits.length === 0) throw new Error('${LABEL} has no ' + kind + ' codec ' + w);
      for (const h of hits) if (!picked.includes(h)) picked.push(h);
    }
    return picked;
  }
  function applyCodecs(pc, codecs) {
    if (!codecs) return;
    for (const t of pc.getTransceivers()) {
      const kind = t.receiver.track && t.receiver.track.kind;
      if (kind && codecs[kind] && t.currentDirection !== 'stopped') {
        t.setCodecPreferences(preferredCodecs(kind, codecs[kind]));
      }
    }
  }
  function gathered(pc, ms) {
    return new Promise(resolve => {
      if (pc.iceGatheringState === 'complete') return resolve('complete');
      const timer = setTimeout(() => { pc.removeEventListener('icegatheringstatechange', on); resolve('timeout'); }, ms);
      function on() {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(timer);
          pc.removeEventListener('icegatheringstatechange', on);
          resolve('complete');
        }
      }
      pc.addEventListener('icegatheringstatechange', on);
    });
  }
  const summarize = ${SUMMARIZE};
  const frameOf = ${FRAME_OF};

  window.driver = {
    async new(c) {
      try {
        if (pcs.has(c.pc)) throw new Error('peer connection ' + JSON.stringify(c.pc) + ' exists');
        const pc = new RTCPeerConnection(c.config || {});
        pc.__channels = [];
        pc.addEventListener('datachannel', ev => pc.__channels.push(ev.channel));
        // Received audio is played out, as a softphone would: Chromium measures audioLevel
        // and totalAudioEnergy of inbound-rtp only on what it renders.
        pc.addEventListener('track', ev => {
          if (ev.track.kind !== 'audio') return;
          const el = document.createElement('audio');
          el.autoplay = true;
          el.srcObject = new MediaStream([ev.track]);
          document.body.appendChild(el);
          el.play().catch(() => {});
        });
        pcs.set(c.pc, pc);
        return { ok: true };
      } catch (e) { return fail(e); }
    },
    async offer(c) {
      try {
        const pc = getPc(c.pc);
        const media = c.media || ['audio'];
        for (const m of media) {
          if (m === 'data') {
            pc.__channels.push(pc.createDataChannel('estuary-' + pc.__channels.length));
          } else if (m === 'audio' || m === 'video') {
            if (c.tracks === 'fake') {
              const s = await fakeTracks();
              const track = (m === 'audio' ? s.getAudioTracks() : s.getVideoTracks())[0].clone();
              pc.addTransceiver(track, { direction: 'sendrecv', streams: [s] });
            } else {
              pc.addTransceiver(m, { direction: 'sendrecv' });
            }
          } else {
            throw new Error('unknown media ' + JSON.stringify(m) + ' (audio, video or data)');
          }
        }
        applyCodecs(pc, c.codecs);
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        const gathering = await gathered(pc, c.gatherTimeoutMs ?? 3000);
        return { ok: true, sdp: pc.localDescription.sdp, gathering };
      } catch (e) { return fail(e); }
    },
    async dtmf(c) {
      try {
        const pc = getPc(c.pc);
        const sender = pc.getSenders().find(s => s.track && s.track.kind === 'audio');
        if (!sender || !sender.dtmf) throw new Error('no audio sender with DTMF');
        sender.dtmf.insertDTMF(c.tones, c.duration ?? 100, c.gap ?? 70);
        return { ok: true };
      } catch (e) { return fail(e); }
    },
    async 'remote-answer'(c) {
      try {
        const pc = getPc(c.pc);
        await pc.setRemoteDescription({ type: 'answer', sdp: c.sdp });
        return { ok: true, signalingState: pc.signalingState };
      } catch (e) { return fail(e); }
    },
    async 'remote-offer'(c) {
      try {
        const pc = getPc(c.pc);
        await pc.setRemoteDescription({ type: 'offer', sdp: c.sdp });
        if (c.tracks === 'fake') {
          const s = await fakeTracks();
          for (const t of pc.getTransceivers()) {
            const kind = t.receiver.track && t.receiver.track.kind;
            if (t.sender.track || (kind !== 'audio' && kind !== 'video')) continue;
            if (t.direction === 'inactive' || t.direction === 'stopped') continue;
            const track = (kind === 'audio' ? s.getAudioTracks() : s.getVideoTracks())[0].clone();
            await t.sender.replaceTrack(track);
            t.sender.setStreams(s);
            t.direction = 'sendrecv';
          }
        }
        applyCodecs(pc, c.codecs);
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        const gathering = await gathered(pc, c.gatherTimeoutMs ?? 3000);
        return { ok: true, sdp: pc.localDescription.sdp, gathering };
      } catch (e) { return fail(e); }
    },
    async stats(c) {
      try {
        const pc = getPc(c.pc);
        return { ok: true, stats: await summarize(pc, pc.__channels) };
      } catch (e) { return fail(e); }
    },
    async 'video-frame'(c) {
      try {
        const pc = getPc(c.pc);
        const side = c.track === 'local' ? pc.getSenders() : pc.getReceivers();
        const holder = side.find(x => x.track && x.track.kind === 'video');
        if (!holder) throw new Error('no ' + (c.track || 'remote') + ' video track');
        const el = document.createElement('video');
        el.muted = true;
        el.autoplay = true;
        el.playsInline = true;
        el.srcObject = new MediaStream([holder.track]);
        document.body.appendChild(el);
        el.play().catch(() => {});
        try {
          return { ok: true, ...(await frameOf(el, c.timeoutMs ?? 5000, 'the ' + (c.track || 'remote') + ' video track')) };
        } finally {
          el.remove();
        }
      } catch (e) { return fail(e); }
    },
    async close(c) {
      try {
        const pc = getPc(c.pc);
        pc.close();
        pcs.delete(c.pc);
        return { ok: true };
      } catch (e) { return fail(e); }
    },
  };
})();
</script>`;

const PAGE_COMMANDS = new Set(['new', 'offer', 'remote-answer', 'remote-offer', 'stats', 'close', 'dtmf', 'video-frame']);

// Tabs opened by page-open, by name.
const tabs = new Map();

function tab(c) {
  if (typeof c.page !== 'string' || c.page === '') throw new Error('missing "page" name');
  const t = tabs.get(c.page);
  if (!t && c.cmd !== 'page-open') throw new Error('no page named ' + JSON.stringify(c.page));
  return t;
}

function text(v, what) {
  if (typeof v !== 'string') throw new Error('missing "' + what + '" string');
  return v;
}

// Tab commands. A failure the test should see (a selector that never matched, a state never
// reached) is {ok:false} with the reason; only a broken command line is a DriverError.
async function tabCommand(c) {
  const t = tab(c);
  const timeout = typeof c.timeoutMs === 'number' ? c.timeoutMs : 15000;
  const failed = (e) => ({ ok: false, error: String(e && e.message ? e.message : e), name: (e && e.name) || 'Error' });
  switch (c.cmd) {
    case 'page-open': {
      if (t) throw new Error('page ' + JSON.stringify(c.page) + ' exists');
      const p = await browser.newPage();
      tabs.set(c.page, p);
      p.on('crash', () => process.stderr.write(`[driver] page ${c.page} crashed\n`));
      p.on('pageerror', (e) => process.stderr.write(`[page ${c.page}] error: ${e.message}\n`));
      p.on('console', (m) => { if (trace || m.type() === 'error' || m.type() === 'warning') process.stderr.write(`[page ${c.page}] ${m.type()}: ${m.text()}\n`); });
      await p.addInitScript(TRACKER);
      try {
        await p.goto(text(c.url, 'url'), { timeout });
        return { ok: true, title: await p.title() };
      } catch (e) { return failed(e); }
    }
    case 'page-fill':
      try { await t.fill(text(c.selector, 'selector'), text(c.value, 'value'), { timeout }); return { ok: true }; }
      catch (e) { return failed(e); }
    case 'page-select':
      try { await t.selectOption(text(c.selector, 'selector'), text(c.value, 'value'), { timeout }); return { ok: true }; }
      catch (e) { return failed(e); }
    case 'page-check':
      try { await t.setChecked(text(c.selector, 'selector'), c.checked === true, { timeout }); return { ok: true }; }
      catch (e) { return failed(e); }
    case 'page-click':
      try { await t.click(text(c.selector, 'selector'), { timeout }); return { ok: true }; }
      catch (e) { return failed(e); }
    case 'page-wait': {
      const selector = text(c.selector, 'selector');
      const attr = text(c.attr, 'attr');
      if (!Array.isArray(c.values)) throw new Error('missing "values" array');
      try {
        const h = await t.waitForFunction(([sel, a, vs]) => {
          const e = document.querySelector(sel);
          const v = e && e.getAttribute(a);
          return vs.includes(v) ? v : null;
        }, [selector, attr, c.values], { timeout, polling: 50 });
        return { ok: true, value: await h.jsonValue() };
      } catch (e) {
        const last = await t.evaluate(([sel, a]) => { const e = document.querySelector(sel); return e && e.getAttribute(a); }, [selector, attr]).catch(() => null);
        return { ok: false, error: `${selector} ${attr} never became one of ${JSON.stringify(c.values)}: last ${JSON.stringify(last)} (${e.message.split('\n')[0]})`, name: 'TimeoutError' };
      }
    }
    case 'page-text':
      try { return { ok: true, text: await t.innerText(text(c.selector, 'selector'), { timeout }) }; }
      catch (e) { return failed(e); }
    case 'page-stats':
      try {
        const stats = await t.evaluate(async () => {
          const pcs = window.__estuaryPcs || [];
          if (pcs.length === 0) throw new Error('the page made no RTCPeerConnection');
          return window.__estuarySummarize(pcs[pcs.length - 1], []);
        });
        return { ok: true, stats };
      } catch (e) { return failed(e); }
    case 'page-video-frame': {
      const selector = text(c.selector, 'selector');
      const wait = typeof c.timeoutMs === 'number' ? c.timeoutMs : 5000;
      try {
        const frame = await t.evaluate(async ([sel, ms]) => {
          const el = document.querySelector(sel);
          if (!el || el.tagName !== 'VIDEO') throw new Error(sel + ' is not a <video> element');
          return window.__estuaryFrameOf(el, ms, sel);
        }, [selector, wait]);
        return { ok: true, ...frame };
      } catch (e) { return failed(e); }
    }
    case 'page-close':
      tabs.delete(c.page);
      await t.close().catch(() => {});
      return { ok: true };
    default:
      throw new Error('unknown cmd ' + JSON.stringify(c.cmd));
  }
}

let browser = null; // what the adapter's launch() returned
let page = null; // the driver page
let server = null; // serves the driver page
let profileDir = null;
let closing = null;

async function shutdown(code) {
  if (!closing) {
    closing = (async () => {
      const done = setTimeout(() => process.exit(code), 5000);
      done.unref();
      try { if (browser) await browser.close(); } catch (_) { /* already gone */ }
      try { if (server) server.close(); } catch (_) { /* never mind */ }
      try { if (profileDir) rmSync(profileDir, { recursive: true, force: true }); } catch (_) { /* best effort */ }
      process.exit(code);
    })();
  }
  return closing;
}
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => shutdown(0));
process.stdout.on('error', () => shutdown(0)); // the reader went away (EPIPE)

// Serves PAGE_HTML on 127.0.0.1 (port chosen by the kernel); resolves to the page's URL.
function servePage() {
  return new Promise((resolve, reject) => {
    server = createServer((req, res) => {
      if (req.url === PAGE_PATH) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(PAGE_HTML);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}${PAGE_PATH}`));
  });
}

async function start() {
  const t0 = Date.now();
  if (!ADAPTERS[BROWSER]) throw new Error(`ESTUARY_BROWSER=${BROWSER}: chromium or firefox`);
  let adapter;
  try {
    adapter = await import(ADAPTERS[BROWSER]);
  } catch (e) {
    throw new Error(`loading ${ADAPTERS[BROWSER]} (is its npm package installed? npm ci in ${import.meta.dirname ?? '.'}): ${e.message}`);
  }
  executablePath = process.env[adapter.executableEnv] || adapter.defaultExecutable;
  profileDir = mkdtempSync(join(tmpdir(), `estuary-${adapter.name}-`));
  // Inherited by every process the browser starts: how the Rust side finds them.
  process.env.ESTUARY_BROWSER_PROFILE = profileDir;
  const url = await servePage();
  browser = await adapter.launch({
    executablePath,
    profileDir,
    trace,
    onUnexpectedClose: () => {
      if (!closing) { process.stderr.write('[driver] browser closed unexpectedly\n'); shutdown(3); }
    },
  });
  page = browser.firstPage;
  page.on('crash', () => process.stderr.write('[driver] page crashed\n'));
  if (trace) page.on('console', m => process.stderr.write(`[page] ${m.type()}: ${m.text()}\n`));
  await page.goto(url);
  const version = await browser.version(page);
  const userAgent = await page.evaluate(() => navigator.userAgent);
  const secure = await page.evaluate(() => window.isSecureContext);
  reply({ ready: true, browser: adapter.name, version, userAgent, secureContext: secure, profile: profileDir, startMs: Date.now() - t0 });
}

async function handle(line) {
  let c;
  try {
    c = JSON.parse(line);
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new Error('not a JSON object');
  } catch (e) {
    return reply({ ok: false, error: 'driver: bad command line: ' + e.message, name: 'ProtocolError' });
  }
  const id = c.id;
  const withId = r => (id === undefined ? r : { id, ...r });
  try {
    if (c.cmd === 'quit') {
      reply(withId({ ok: true }));
      return shutdown(0);
    }
    if (c.cmd === 'ping') return reply(withId({ ok: true }));
    if (typeof c.cmd === 'string' && c.cmd.startsWith('page-')) return reply(withId(await tabCommand(c)));
    if (!PAGE_COMMANDS.has(c.cmd)) throw new Error('unknown cmd ' + JSON.stringify(c.cmd));
    if (typeof c.pc !== 'string' || c.pc === '') throw new Error('missing "pc" name');
    if ((c.cmd === 'remote-answer' || c.cmd === 'remote-offer') && typeof c.sdp !== 'string') {
      throw new Error('missing "sdp" string');
    }
    const r = await page.evaluate(([cmd, arg]) => window.driver[cmd](arg), [c.cmd, c]);
    return reply(withId(r));
  } catch (e) {
    return reply(withId({ ok: false, error: 'driver: ' + (e && e.message ? e.message : String(e)), name: 'DriverError' }));
  }
}

try {
  await start();
} catch (e) {
  reply({ ready: false, browser: BROWSER, error: 'launching ' + (executablePath ?? BROWSER) + ': ' + (e && e.message ? e.message : String(e)) });
  await shutdown(1);
}

// Commands run one at a time, in order; stdin closing ends the driver after the queue drains.
let queue = Promise.resolve();
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', line => {
  if (trace) process.stderr.write(`[driver] > ${line.length > 300 ? line.slice(0, 300) + '...' : line}\n`);
  if (line.trim() === '') return;
  queue = queue.then(() => handle(line));
});
rl.on('close', () => { queue = queue.then(() => shutdown(0)); });
