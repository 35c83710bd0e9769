// The vivavoce page: microphone -> pcm16 over the Realtime WebSocket; answer deltas -> gapless playback.
'use strict';

const RATE = 24000; // pcm16 at 24 kHz both ways, the Realtime default
const $ = (id) => document.getElementById(id);
// State the page shows, also read by the browser test.
const state = window.vivavoce = {
  connected: false, played: 0, responses: {}, latencies: [], user: [], assistant: [], errors: [], events: 0,
};
let ws = null, ctx = null, capture = null, player = null, stream = null;
let sentSamples = 0;
const sentLog = []; // {end: samples sent so far, t: when that piece was captured}
let speechEndT = null; // when the user stopped speaking (page clock)
let current = null; // response id being played
let talking = false;

function b64(buf) {
  let s = '';
  const bytes = new Uint8Array(buf);
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function unb64(text) {
  const bin = atob(text);
  const pcm = new Int16Array(bin.length >> 1);
  for (let i = 0; i < pcm.length; i++) pcm[i] = (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) << 16 >> 16;
  const f = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
  return f;
}
function send(ev) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(ev)); }
function status(text) { $('status').textContent = text; }
function line(role, text) {
  const p = document.createElement('p');
  p.className = role;
  p.textContent = text;
  $('transcript').appendChild(p);
  p.scrollIntoView({ block: 'end' });
  return p;
}

// When the sample at `ms` of our input stream was captured, from the log of pieces sent.
function captureTime(ms) {
  const idx = ms * RATE / 1000;
  for (const e of sentLog) if (e.end >= idx) return e.t - (e.end - idx) * 1000 / RATE;
  return performance.now();
}

function settings() {
  const handsFree = $('mode').value === 'hands-free';
  return {
    voice: $('voice').value,
    speed: parseFloat($('speed').value),
    emotion: $('emotion').value || null,
    emotion_intensity: parseFloat($('intensity').value),
    input_audio_format: 'pcm16',
    output_audio_format: 'pcm16',
    turn_detection: handsFree ? { type: 'server_vad', create_response: true } : null, // silence: the server's default
  };
}

function stopPlayback() { if (player) player.port.postMessage('flush'); }

function onEvent(ev) {
  state.events++;
  switch (ev.type) {
    case 'session.created': send({ type: 'session.update', session: settings() }); break;
    case 'input_audio_buffer.speech_started': stopPlayback(); status('listening'); break;
    case 'input_audio_buffer.speech_stopped': speechEndT = captureTime(ev.audio_end_ms); status('thinking'); break;
    case 'conversation.item.input_audio_transcription.completed':
      state.user.push(ev.transcript); line('user', ev.transcript || '(nothing heard)'); break;
    case 'response.created':
      current = ev.response.id;
      state.responses[current] = { text: '', audio: 0, status: 'in_progress', el: null };
      break;
    case 'response.audio_transcript.delta': {
      const r = state.responses[ev.response_id];
      if (!r) break;
      r.text += ev.delta;
      if (!r.el) r.el = line('assistant', '');
      r.el.textContent = r.text;
      break;
    }
    case 'response.audio.delta': {
      const r = state.responses[ev.response_id];
      if (!r || r.status !== 'in_progress' || ev.response_id !== current) break; // never play a cancelled answer
      if (r.audio === 0 && speechEndT !== null) {
        const ms = Math.round(performance.now() - speechEndT);
        state.latencies.push(ms);
        $('latency').textContent = ms + ' ms';
        speechEndT = null;
      }
      const samples = unb64(ev.delta);
      r.audio += samples.length;
      player.port.postMessage(samples, [samples.buffer]);
      status('speaking');
      break;
    }
    case 'response.done': {
      const r = state.responses[ev.response.id];
      if (r) { r.status = ev.response.status; state.assistant.push(r.text); delete r.el; }
      if (ev.response.status === 'cancelled') stopPlayback();
      if (current === ev.response.id) current = null;
      status(talking ? 'listening' : 'ready');
      break;
    }
    case 'error':
      state.errors.push(ev.error);
      line('error', `${ev.error.code}: ${ev.error.message}`);
      break;
  }
}

async function start() {
  const key = new URLSearchParams(location.search).get('api_key');
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  ws = new WebSocket(`${proto}://${location.host}/v1/realtime` + (key ? `?api_key=${encodeURIComponent(key)}` : ''));
  ws.onclose = () => { state.connected = false; status('disconnected'); };
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('cannot connect')); });
  state.connected = true;
  status('ready');
  ctx = new AudioContext({ sampleRate: RATE, latencyHint: 'interactive' });
  await ctx.audioWorklet.addModule('/static/worklet.js');
  stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  capture = new AudioWorkletNode(ctx, 'vivavoce-capture');
  player = new AudioWorkletNode(ctx, 'vivavoce-player', { outputChannelCount: [1] });
  player.port.onmessage = (e) => { state.played = e.data.played; $('played').textContent = (e.data.played / RATE).toFixed(1); };
  player.connect(ctx.destination);
  ctx.createMediaStreamSource(stream).connect(capture);
  capture.port.onmessage = (e) => {
    const handsFree = $('mode').value === 'hands-free';
    if (!handsFree && !talking) return;
    sentSamples += e.data.byteLength / 2;
    sentLog.push({ end: sentSamples, t: performance.now() });
    if (sentLog.length > 600) sentLog.shift();
    send({ type: 'input_audio_buffer.append', audio: b64(e.data) });
  };
  await ctx.resume();
  $('start').textContent = 'Stop';
  $('start').classList.add('on');
  $('talk').disabled = $('mode').value !== 'push-to-talk';
}

function stop() {
  if (ws) ws.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  ws = ctx = stream = capture = player = null;
  $('start').textContent = 'Start';
  $('start').classList.remove('on');
  $('talk').disabled = true;
  status('idle');
}

$('start').onclick = () => (ws ? stop() : start().catch((e) => { line('error', String(e)); stop(); }));
for (const id of ['voice', 'speed', 'emotion', 'intensity', 'mode']) {
  $(id).onchange = () => {
    $('speedOut').textContent = parseFloat($('speed').value).toFixed(1);
    $('talk').disabled = !ws || $('mode').value !== 'push-to-talk';
    send({ type: 'session.update', session: settings() });
  };
}
// Push-to-talk: talking while held; on release the turn is committed and answered.
$('talk').onpointerdown = () => {
  if (!ws) return;
  talking = true;
  $('talk').classList.add('on');
  stopPlayback();
  if (current) send({ type: 'response.cancel' });
  send({ type: 'input_audio_buffer.clear' });
  status('listening');
};
$('talk').onpointerup = $('talk').onpointerleave = () => {
  if (!talking) return;
  talking = false;
  $('talk').classList.remove('on');
  speechEndT = performance.now();
  send({ type: 'input_audio_buffer.commit' });
  send({ type: 'response.create' });
  status('thinking');
};
