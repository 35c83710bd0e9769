// Audio worklets of the vivavoce page: microphone capture (float -> pcm16 pieces) and gapless playback.

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate / 10); // 100 ms pieces go to the socket
    this.piece = new Int16Array(this.size);
    this.n = 0;
    this.on = true;
    this.port.onmessage = (e) => { if ('on' in e.data) this.on = e.data.on; };
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch || !this.on) return true;
    for (let i = 0; i < ch.length; i++) {
      const s = Math.max(-1, Math.min(1, ch[i]));
      this.piece[this.n++] = s < 0 ? s * 32768 : s * 32767;
      if (this.n === this.piece.length) {
        this.port.postMessage(this.piece.buffer, [this.piece.buffer]);
        this.piece = new Int16Array(this.size); // the old buffer was handed over (detached)
        this.n = 0;
      }
    }
    return true;
  }
}

// Plays queued Float32 pieces back to back (no gaps between deltas); 'flush' drops everything queued at once,
// which is how a barge-in silences the answer immediately.
class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.played = 0;
    this.sinceReport = 0;
    this.port.onmessage = (e) => {
      if (e.data === 'flush') { this.queue = []; this.offset = 0; }
      else this.queue.push(e.data);
    };
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), i);
      i += n; this.offset += n; this.played += n;
      if (this.offset === head.length) { this.queue.shift(); this.offset = 0; }
    }
    out.fill(0, i);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 10) {
      this.sinceReport = 0;
      this.port.postMessage({ played: this.played, queued: this.queue.reduce((a, q) => a + q.length, 0) - this.offset });
    }
    return true;
  }
}

registerProcessor('vivavoce-capture', Capture);
registerProcessor('vivavoce-player', Player);
