// Estuary demo softphone: JsSIP registering and calling through the gateway's own
// WebSocket endpoint (same origin, subprotocol "sip"). No framework; the states are also
// written to data-state attributes so automated checks can follow them.
import JsSIP from 'jssip';

const $ = (id) => document.getElementById(id);
const el = {
  account: $('account'),
  uri: $('uri'),
  password: $('password'),
  authUser: $('auth-user'),
  wsUrl: $('ws-url'),
  dtmfMode: $('dtmf-mode'),
  voice: $('voice-processing'),
  register: $('register'),
  unregister: $('unregister'),
  uaState: $('ua-state'),
  callForm: $('call'),
  target: $('target'),
  targets: $('targets'),
  dial: $('dial'),
  answer: $('answer'),
  hangup: $('hangup'),
  hold: $('hold'),
  video: $('video'),
  videos: $('videos'),
  remoteVideo: $('remote-video'),
  localVideo: $('local-video'),
  callState: $('call-state'),
  keypad: $('keypad'),
  audio: $('remote-audio'),
  log: $('log'),
  clearLog: $('clear-log'),
};

const MAX_LOG = 300;
const DTMF_KEYS = '0123456789*#';

let domain = '';
let ua = null;
let session = null;
// The camera added to the call by the Video button: its stream and the RTCRtpSender, or null.
let camera = null;
// A re-INVITE of ours is waiting for its answer (one offer at a time, RFC 3264 §4).
let renegotiating = false;

function log(text, isError = false) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  if (isError) li.className = 'error';
  el.log.append(li);
  while (el.log.childElementCount > MAX_LOG) el.log.firstElementChild.remove();
  el.log.scrollTop = el.log.scrollHeight;
  (isError ? console.warn : console.info)(`[demo] ${text}`);
}

function setState(output, state, text) {
  output.dataset.state = state;
  output.textContent = text;
  updateButtons();
}

function updateButtons() {
  const connected = ua !== null && ua.isConnected();
  const established = session !== null && session.isEstablished();
  el.register.disabled = ua !== null;
  el.unregister.disabled = ua === null;
  el.dial.disabled = !connected || session !== null;
  el.answer.disabled = !(session && session.direction === 'incoming' && session.isInProgress()
    && el.callState.dataset.state === 'ringing');
  el.hangup.disabled = session === null;
  el.hold.disabled = !established;
  const held = established && session.isOnHold().local;
  el.hold.textContent = held ? 'Resume' : 'Hold';
  el.hold.setAttribute('aria-pressed', String(held));
  el.video.disabled = !established || renegotiating || held;
  el.video.textContent = camera ? 'Stop video' : 'Video';
  el.video.setAttribute('aria-pressed', String(camera !== null));
  for (const key of el.keypad.querySelectorAll('button')) key.disabled = !established;
}

function describeResponse(message) {
  return message && message.status_code ? ` (${message.status_code} ${message.reason_phrase})` : '';
}

/// Media options for a call or an answer: audio only, no STUN/TURN (the gateway is ICE-lite
/// and reachable on the address in its candidates).
function mediaOptions() {
  const audio = el.voice.checked
    ? true
    : { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  return { mediaConstraints: { audio, video: false }, pcConfig: { iceServers: [] } };
}

// ---- registration ----

function start() {
  if (ua) return;
  let uri = el.uri.value.trim();
  if (!/^sips?:/i.test(uri)) uri = `sip:${uri}`;
  const config = {
    uri,
    register: true,
    session_timers: false,
    user_agent: `Estuary demo softphone (JsSIP ${JsSIP.version})`,
  };
  if (el.password.value) config.password = el.password.value;
  if (el.authUser.value.trim()) config.authorization_user = el.authUser.value.trim();
  let me;
  try {
    config.sockets = [new JsSIP.WebSocketInterface(el.wsUrl.value.trim())];
    me = new JsSIP.UA(config);
  } catch (e) {
    log(`cannot start: ${e.parameter ? `${e.parameter}: ` : ''}${e.message}`, true);
    return;
  }
  ua = me;
  const mine = () => me === ua;
  me.on('connecting', () => {
    if (mine()) setState(el.uaState, 'connecting', `connecting to ${el.wsUrl.value}`);
  });
  me.on('connected', () => {
    log(`WebSocket connected to ${el.wsUrl.value}`);
    if (mine()) setState(el.uaState, 'connected', 'connected, registering');
  });
  me.on('disconnected', (e) => {
    log(`WebSocket closed${e && e.code ? ` (code ${e.code}${e.reason ? `: ${e.reason}` : ''})` : ''}`,
      e && e.error);
    if (mine()) setState(el.uaState, 'disconnected', 'disconnected; retrying');
  });
  me.on('registered', (e) => {
    log(`registered as ${uri}${describeResponse(e.response)}`);
    if (mine()) setState(el.uaState, 'registered', `registered as ${uri}`);
  });
  me.on('unregistered', (e) => {
    log(`unregistered${describeResponse(e && e.response)}`);
    if (mine()) setState(el.uaState, 'unregistered', 'not registered');
  });
  me.on('registrationFailed', (e) => {
    log(`registration failed: ${e.cause}${describeResponse(e.response)}`, true);
    if (mine()) setState(el.uaState, 'registrationFailed', `failed: ${e.cause}${describeResponse(e.response)}`);
  });
  me.on('newRTCSession', (e) => {
    if (!mine()) return;
    if (session) {
      if (e.originator === 'remote') {
        e.session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
        log(`refused a second call from ${e.session.remote_identity.uri} (486)`);
      }
      return;
    }
    session = e.session;
    watchSession(e.session, e.originator);
  });
  log(`starting as ${uri}`);
  me.start();
  updateButtons();
}

function stop() {
  if (!ua) return;
  const old = ua;
  ua = null;
  session = null;
  // Ends any call, unregisters, then closes the WebSocket once that is answered.
  old.stop();
  log('unregistering and disconnecting');
  setState(el.uaState, 'idle', 'not connected');
  setState(el.callState, 'idle', 'no call');
}

// ---- calls ----

function watchSession(s, originator) {
  const peer = s.remote_identity.uri.toString();
  const mine = () => s === session;
  const state = (name, text) => {
    if (mine()) setState(el.callState, name, text);
  };
  if (originator === 'remote') {
    log(`incoming call from ${peer}`);
    state('ringing', `incoming call from ${peer}`);
  } else {
    log(`calling ${peer}`);
    state('calling', `calling ${peer}`);
  }
  const watchPeerConnection = (pc) => {
    pc.addEventListener('track', (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      log(`remote ${ev.track.kind} track`);
      if (ev.track.kind === 'video') {
        el.remoteVideo.srcObject = new MediaStream([ev.track]);
        el.videos.hidden = false;
        return;
      }
      if (ev.track.kind !== 'audio' || el.audio.srcObject === stream) return;
      el.audio.srcObject = stream;
      el.audio.play().catch((err) => log(`audio playback blocked (${err.message}); click the page`, true));
    });
    pc.addEventListener('iceconnectionstatechange', () => log(`ICE ${pc.iceConnectionState}`,
      pc.iceConnectionState === 'failed'));
    pc.addEventListener('connectionstatechange', () => log(`DTLS/media ${pc.connectionState}`,
      pc.connectionState === 'failed'));
  };
  if (s.connection) watchPeerConnection(s.connection);
  s.on('peerconnection', (e) => watchPeerConnection(e.peerconnection));
  s.on('progress', (e) => {
    if (originator === 'local') {
      log(`progress${describeResponse(e.response)}`);
      state('progress', `ringing${describeResponse(e.response)}`);
    }
  });
  s.on('accepted', (e) => {
    log(`answered${describeResponse(e.response)}`);
    state('accepted', 'answered, connecting media');
  });
  s.on('confirmed', () => {
    log(`in call with ${peer}`);
    state('confirmed', `in call with ${peer}`);
  });
  s.on('ended', (e) => finish(s, `ended by ${e.originator === 'local' ? 'us' : 'the far end'}: ${e.cause}`, false));
  s.on('failed', (e) => finish(s, `failed: ${e.cause}${describeResponse(e.message)}`, e.originator !== 'local'));
  s.on('getusermediafailed', (e) => log(`no microphone: ${e.name || ''} ${e.message || e}`, true));
  s.on('peerconnection:setremotedescriptionfailed', (e) => log(`SDP refused: ${e.message || e}`, true));
  s.on('newDTMF', (e) => {
    if (e.originator === 'remote') log(`received DTMF ${e.dtmf.tone}`);
  });
  s.on('hold', (e) => {
    log(`held by ${e.originator === 'local' ? 'us' : 'the far end'}`);
    updateButtons();
  });
  s.on('unhold', (e) => {
    log(`resumed by ${e.originator === 'local' ? 'us' : 'the far end'}`);
    updateButtons();
  });
}

function finish(s, text, isError) {
  log(`call ${text}`, isError);
  if (s !== session) return;
  session = null;
  el.audio.srcObject = null;
  el.remoteVideo.srcObject = null;
  stopCamera();
  renegotiating = false;
  el.video.dataset.state = 'off';
  setState(el.callState, isError ? 'failed' : 'ended', text);
}

function stopCamera() {
  if (camera) for (const track of camera.stream.getTracks()) track.stop();
  camera = null;
  el.localVideo.srcObject = null;
  el.videos.hidden = el.remoteVideo.srcObject === null;
}

/// Adds the camera to an audio call, or takes it away, by a re-INVITE offering the changed
/// video stream (JsSIP renegotiate()). The button's data-state says where that stands:
/// off, offering, on, failed.
async function toggleVideo() {
  const s = session;
  if (!s || !s.isEstablished() || renegotiating || !s.connection) return;
  const pc = s.connection;
  renegotiating = true;
  el.video.dataset.state = 'offering';
  updateButtons();
  try {
    if (camera) {
      pc.removeTrack(camera.sender);
      stopCamera();
      log('camera off: re-INVITE without our video');
    } else {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      if (s !== session) {
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      const sender = pc.addTrack(stream.getVideoTracks()[0], stream);
      camera = { stream, sender };
      el.localVideo.srcObject = stream;
      el.videos.hidden = false;
      log('camera on: re-INVITE offering video');
    }
    const answered = await new Promise((resolve) => {
      // A failed re-INVITE ends the call (JsSIP's choice); 'ended'/'failed' say so.
      if (!s.renegotiate({}, () => resolve(true))) resolve(false);
      s.once('ended', () => resolve(false));
      s.once('failed', () => resolve(false));
    });
    if (s !== session) return;
    if (answered) {
      const video = pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
      log(`video ${camera ? 'on' : 'off'}: answered${video ? ` (${video.currentDirection})` : ''}`);
      el.video.dataset.state = camera ? 'on' : 'off';
    } else {
      log('the far end did not take the video change', true);
      if (camera) {
        pc.removeTrack(camera.sender);
        stopCamera();
      }
      el.video.dataset.state = 'failed';
    }
  } catch (e) {
    log(`video: ${e.name || ''} ${e.message || e}`, true);
    if (s === session) el.video.dataset.state = 'failed';
  } finally {
    if (s === session) renegotiating = false;
    updateButtons();
  }
}

function dial() {
  if (!ua || session) return;
  let target = el.target.value.trim();
  if (!target) return;
  if (!/^(sips?|tel):/i.test(target)) target = target.includes('@') ? `sip:${target}` : `sip:${target}@${domain}`;
  try {
    ua.call(target, mediaOptions());
  } catch (e) {
    log(`cannot call ${target}: ${e.message}`, true);
    session = null;
    updateButtons();
  }
}

function answer() {
  if (!session || el.answer.disabled) return;
  setState(el.callState, 'answering', 'answering');
  try {
    session.answer(mediaOptions());
  } catch (e) {
    log(`cannot answer: ${e.message}`, true);
  }
}

function hangup() {
  if (!session) return;
  try {
    session.terminate();
  } catch (e) {
    log(`hang up: ${e.message}`, true);
  }
}

/// RFC 4733 needs telephone-event in the answer; without it fall back to SIP INFO.
function canSendInMedia(s) {
  const pc = s.connection;
  if (!pc) return false;
  return pc.getSenders().some((sender) => sender.dtmf && sender.dtmf.canInsertDTMF);
}

function sendDtmf(tone) {
  if (!session || !session.isEstablished()) return;
  let transportType = el.dtmfMode.value;
  if (transportType === 'RFC2833' && !canSendInMedia(session)) {
    log('the far end did not accept telephone-event: sending DTMF by SIP INFO');
    transportType = 'INFO';
  }
  try {
    session.sendDTMF(tone, { transportType });
    log(`sent DTMF ${tone} (${transportType === 'INFO' ? 'SIP INFO' : 'RFC 4733'})`);
  } catch (e) {
    log(`DTMF ${tone}: ${e.message}`, true);
  }
}

// ---- page ----

async function init() {
  const params = new URLSearchParams(location.search);
  let wsPath = '/';
  try {
    const res = await fetch('/demo/config.json', { cache: 'no-store' });
    if (res.ok) {
      const config = await res.json();
      if (typeof config.domain === 'string') domain = config.domain;
      if (typeof config.ws_path === 'string' && config.ws_path.startsWith('/')) wsPath = config.ws_path;
    } else {
      log(`/demo/config.json: HTTP ${res.status}`, true);
    }
  } catch (e) {
    log(`/demo/config.json: ${e.message}`, true);
  }
  domain = params.get('domain') || domain || location.hostname;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  el.wsUrl.value = `${scheme}//${location.host}${wsPath}`;
  el.uri.value = params.get('uri') || `sip:${params.get('user') || 'alice'}@${domain}`;
  el.target.value = params.get('target') || `sip:echo@${domain}`;
  for (const name of ['echo', 'tone']) {
    const option = document.createElement('option');
    option.value = `sip:${name}@${domain}`;
    el.targets.append(option);
  }
  log(`JsSIP ${JsSIP.version}; IMS domain ${domain}; SIP over ${el.wsUrl.value}`);
  if (!window.RTCPeerConnection) log('this browser has no WebRTC', true);
  if (!window.isSecureContext) {
    log('not a secure context: the browser will refuse the microphone (use https:// or localhost)', true);
  }
  updateButtons();
}

el.account.addEventListener('submit', (ev) => {
  ev.preventDefault();
  start();
});
el.unregister.addEventListener('click', stop);
el.callForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  dial();
});
el.answer.addEventListener('click', answer);
el.hangup.addEventListener('click', hangup);
// Hold is a re-INVITE with a=sendonly (RFC 3264 §8.4); resume offers sendrecv again.
el.hold.addEventListener('click', () => {
  if (!session || !session.isEstablished()) return;
  if (session.isOnHold().local) session.unhold();
  else session.hold();
});
el.video.addEventListener('click', toggleVideo);
el.keypad.addEventListener('click', (ev) => {
  const key = ev.target.closest('button');
  if (key) sendDtmf(key.textContent.trim());
});
document.addEventListener('keydown', (ev) => {
  const typing = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement;
  if (!typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey && DTMF_KEYS.includes(ev.key) && ev.key.length === 1) {
    sendDtmf(ev.key);
  }
});
el.clearLog.addEventListener('click', () => el.log.replaceChildren());
window.addEventListener('pagehide', () => {
  if (ua) ua.stop();
});

init();
