// jetscribe's web page: upload media, follow each job's events, show and download the transcript.
// Plain ES2020, no build step, no external resources. Text from the server or the user (file
// names, transcripts, error details) is only ever set with textContent, never parsed as HTML.
'use strict';

const KEY_STORAGE = 'jetscribe.apiKey';
const STAGES = ['decode', 'transcribe', 'analyze', 'notify'];
const STAGE_ACTIVITY = {
  decode: 'Decoding',
  transcribe: 'Transcribing',
  analyze: 'Analyzing',
  notify: 'Finishing',
};
// Each stage's share of the job's overall progress (proto-msgs Stage::progress_span).
const STAGE_SPAN = { decode: [0, 15], transcribe: [15, 90], analyze: [90, 97], notify: [97, 100] };
const STEP_STAGE = {
  decoding: 'decode',
  transcribing: 'transcribe',
  analyzing: 'analyze',
  notifying: 'notify',
};
const FINAL_STATUSES = new Set(['completed', 'failed', 'cancelled']);
const WHISPER_LANGUAGES = ('en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms ' +
  'cs ro da hu ta no th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn ' +
  'bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my ' +
  'bo tl mg as tt haw ln ha ba jw su').split(' ');
// After this many event streams in a row fail, a job is followed by polling /status instead,
// and its stream is tried again after STREAM_RETRY_POLLS polls.
const MAX_STREAM_FAILURES = 5;
const STREAM_RETRY_POLLS = 15;
const POLL_INTERVAL_MS = 2000;
// A browser opens at most six HTTP/1.1 connections to a server (for all its tabs together), and
// each event stream holds one for as long as its job runs: past this many, jobs poll /status, so
// that uploads, cancels, results and downloads (and a second tab) always find a connection.
const MAX_LIVE_STREAMS = 2;
// The server sends a comment every 15 s on an idle stream: this long without a byte, the
// connection is taken as dead (a peer gone without closing it) and the stream is opened again.
const STREAM_SILENCE_MS = 45000;
// Past this many segments, those out of sight are not laid out (style.css, `.segments.long`).
const LONG_TRANSCRIPT = 500;
// The server refuses a file name over this many bytes of UTF-8.
const MAX_NAME_BYTES = 255;
// A refusal for a while (429, 503 with Retry-After) is tried again by itself when it asks to wait
// at most this long.
const MAX_RETRY_AFTER_S = 300;

const $ = (selector, root = document) => root.querySelector(selector);

// ---------------------------------------------------------------------------------------------
// Formatting

const languageNames = (() => {
  try {
    return new Intl.DisplayNames(['en'], { type: 'language' });
  } catch {
    return null;
  }
})();

function languageName(code) {
  if (!code) return '';
  try {
    const name = languageNames && languageNames.of(code);
    return name && name !== code ? name : code;
  } catch {
    return code;
  }
}

/** Seconds as h:mm:ss or m:ss (tenths with `precise`). */
function clock(seconds, precise = false) {
  const number = Number(seconds);
  const value = Number.isFinite(number) ? Math.max(0, number) : 0;
  // Tenths counted whole (1.2 s is not 1.1999… s), with room for a float's last bit.
  const tenths = Math.floor(value * 10 + 1e-6);
  const whole = precise ? Math.floor(tenths / 10) : Math.round(value);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor(whole / 60) % 60;
  let secs = String(whole % 60).padStart(2, '0');
  if (precise) secs += `.${tenths % 10}`;
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${secs}` : `${minutes}:${secs}`;
}

function bytes(count) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = Number(count) || 0;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** The file's name as sent: one the server would refuse as too long is cut, keeping its
 * extension (the page still shows, and names downloads after, the whole name). */
function uploadName(name) {
  const encoder = new TextEncoder();
  const size = (text) => encoder.encode(text).length;
  if (size(name) <= MAX_NAME_BYTES) return name;
  const dot = name.lastIndexOf('.');
  const extension = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : '';
  const tail = `\u2026${extension}`;
  let budget = MAX_NAME_BYTES - size(tail);
  let kept = '';
  for (const character of name.slice(0, name.length - extension.length)) {
    budget -= size(character);
    if (budget < 0) break;
    kept += character;
  }
  return kept + tail;
}

function baseName(filename) {
  const name = String(filename || 'transcript').split(/[\\/]/).pop();
  const dot = name.lastIndexOf('.');
  return (dot > 0 ? name.slice(0, dot) : name) || 'transcript';
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/** Exponential backoff with jitter, 1 s to 30 s. */
function backoff(attempt) {
  const base = Math.min(30000, 1000 * 2 ** Math.min(attempt, 5));
  return base * (0.75 + Math.random() * 0.5);
}

// ---------------------------------------------------------------------------------------------
// API key and requests

class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

const auth = {
  key: sessionStorage.getItem(KEY_STORAGE) || '',
  accepted: false,
  waiters: [],

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    return headers;
  },

  /** Resolves once the server accepts our requests (at once when it already does). */
  ready() {
    if (this.accepted) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  },

  /** A request came back 401: ask for a (new) key. */
  refused(detail) {
    this.accepted = false;
    document.body.dataset.auth = this.key ? 'rejected' : 'needed';
    showKeyPanel(this.key ? `That API key was not accepted${detail ? `: ${detail}` : '.'}` : '');
  },

  acceptedNow() {
    this.accepted = true;
    document.body.dataset.auth = 'ok';
    hideKeyPanel();
    const waiters = this.waiters.splice(0);
    waiters.forEach((resolve) => resolve());
  },

  set(key) {
    this.key = key;
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    $('#key-forget').hidden = !key;
  },
};

/** The `detail` of an error answer, or its status line. */
async function errorDetail(response) {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && typeof body.detail === 'string') return body.detail;
    if (body && body.error && typeof body.error.message === 'string') return body.error.message;
    if (body && typeof body.error_message === 'string') return body.error_message;
  } catch {
    // not JSON
  }
  // A proxy's error page is markup, not words for the user: its status line says as much.
  const type = response.headers.get('Content-Type') || '';
  const plain = text.trim();
  if (!plain || type.includes('html') || plain.startsWith('<')) {
    return `${response.status} ${response.statusText}`.trim();
  }
  return plain.slice(0, 300);
}

/** fetch() with the key; a 401 asks for a key and throws. */
async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    cache: 'no-store',
    headers: auth.headers(options.headers),
  });
  if (response.status === 401) {
    const detail = await errorDetail(response);
    auth.refused(detail);
    throw new HttpError(401, detail);
  }
  return response;
}

// ---------------------------------------------------------------------------------------------
// The key panel and the server probe

function showKeyPanel(message) {
  const panel = $('#key-panel');
  $('#key-message').textContent = message || 'Enter an API key to use this server.';
  if (panel.hidden) {
    panel.hidden = false;
    const input = $('#key-input');
    input.value = '';
    input.focus();
  } else if (message) {
    $('#key-input').select();
  }
}

function hideKeyPanel() {
  $('#key-panel').hidden = true;
}

function showServerNote(text) {
  const note = $('#server-note');
  note.textContent = text || '';
  note.hidden = !text;
}

/** Asks the server whether our key (or none) is accepted, and lists its models. */
async function probe() {
  try {
    const response = await api('/models');
    if (!response.ok) throw new HttpError(response.status, await errorDetail(response));
    showServerNote('');
    auth.acceptedNow();
    fillModels(await response.json().catch(() => null));
    return true;
  } catch (error) {
    if (error.status === 401) return false;
    showServerNote(`Cannot reach the server: ${error.message}. Retrying…`);
    return null;
  }
}

async function probeUntilAnswered() {
  for (let attempt = 0; ; attempt += 1) {
    if ((await probe()) !== null) return;
    await sleep(backoff(attempt));
  }
}

function fillModels(body) {
  const select = $('#opt-model');
  const models = (body && Array.isArray(body.models)) ? body.models : [];
  const chosen = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const model of models) {
    if (!model || typeof model.name !== 'string') continue;
    const option = document.createElement('option');
    option.value = model.name;
    option.textContent = model.default ? `${model.name} (default)` : model.name;
    select.append(option);
  }
  select.value = chosen;
}

function fillLanguages() {
  const list = $('#language-codes');
  for (const code of WHISPER_LANGUAGES) {
    const option = document.createElement('option');
    option.value = code;
    option.label = languageName(code);
    list.append(option);
  }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events over fetch (EventSource cannot send an Authorization header)

/** Yields {type, data, id} for each event of an SSE body, as the HTML standard parses them;
 * `onChunk` is called for every piece read (keep-alive comments included). */
async function* readEvents(body, onChunk = () => {}) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let first = true;
  let type = '';
  let data = [];
  let lastId = null;
  const lineBreak = /\r\n|\r|\n/;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      onChunk();
      // At the end, a CR held back as maybe half of a CRLF ends its line after all.
      if (done && !buffer.endsWith('\r')) break;
      buffer += done ? '\n' : value;
      if (first && buffer.length > 0) {
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
        first = false;
      }
      for (;;) {
        const match = lineBreak.exec(buffer);
        // A lone CR at the end may be the first half of a CRLF: wait for more.
        if (!match || (match[0] === '\r' && match.index === buffer.length - 1)) break;
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === '') {
          if (data.length > 0) yield { type: type || 'message', data: data.join('\n'), id: lastId };
          type = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // a comment: keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (field === 'event') type = text;
        else if (field === 'data') data.push(text);
        else if (field === 'id' && !text.includes('\0')) lastId = text;
      }
      if (done) break;
    }
  } finally {
    reader.releaseLock();
  }
  // An event not ended by a blank line is dropped, as the standard says.
}

// ---------------------------------------------------------------------------------------------
// Jobs

const uploads = { queue: [], running: false };
const liveStreams = { open: 0 };

function enqueueUpload(job) {
  uploads.queue.push(job);
  if (!uploads.running) runUploads();
}

async function runUploads() {
  uploads.running = true;
  while (uploads.queue.length > 0) {
    const job = uploads.queue.shift();
    if (!job.removed && !job.cancelled) await job.upload();
  }
  uploads.running = false;
}

class Job {
  constructor(file, options) {
    this.file = file;
    this.options = options;
    this.jobId = null;
    this.idempotencyKey = newKey();
    this.progress = 0;
    this.eta = null;
    this.duration = null;
    this.stage = null;
    this.doneStages = new Set();
    this.status = 'uploading';
    this.ended = false;
    this.cancelled = false;
    this.removed = false;
    this.xhr = null;
    this.pause = null; // AbortController of a wait before uploading again
    this.follow = null; // AbortController of the event stream
    this.mediaUrl = null;
    this.urls = [];

    const fragment = $('#job-template').content.cloneNode(true);
    this.root = fragment.firstElementChild;
    this.el = (selector) => $(selector, this.root);
    this.el('.job-name').textContent = file.name;
    this.el('.job-size').textContent = bytes(file.size);
    this.el('.cancel').addEventListener('click', () => this.cancel());
    this.el('.retry').addEventListener('click', () => this.retry());
    this.el('.dismiss').addEventListener('click', () => this.remove());
    this.setBadge('Waiting to upload', 'waiting');
    $('#jobs').prepend(this.root);
  }

  setBadge(text, kind) {
    const badge = this.el('.job-badge');
    badge.textContent = text;
    badge.dataset.kind = kind;
  }

  showError(message) {
    const error = this.el('.error');
    error.textContent = message || '';
    error.hidden = !message;
  }

  setButtons({ cancel = false, retry = false, dismiss = false }) {
    this.el('.cancel').hidden = !cancel;
    this.el('.retry').hidden = !retry;
    this.el('.dismiss').hidden = !dismiss;
  }

  // --- upload ---------------------------------------------------------------------------------

  form() {
    const form = new FormData();
    // Options first: the server checks them before it stores the file.
    const { language, model, words, translate } = this.options;
    if (language) form.append('language', language);
    if (model) form.append('model', model);
    if (words) form.append('word_timestamps', 'true');
    if (translate) form.append('task', 'translate');
    form.append('file', this.file, uploadName(this.file.name));
    return form;
  }

  async upload() {
    if (!auth.accepted) this.setBadge('Waiting for the API key', 'waiting');
    await auth.ready();
    if (this.removed || this.cancelled) return;
    this.status = 'uploading';
    this.showError('');
    this.setButtons({ cancel: true });
    this.setBadge('Uploading', 'running');
    const bar = this.el('.upload-bar');
    const text = this.el('.upload-text');
    const started = performance.now();
    const total = this.file.size;
    text.textContent = `0 of ${bytes(total)}`;

    const answer = await new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open('POST', '/process');
      for (const [name, value] of Object.entries(auth.headers())) xhr.setRequestHeader(name, value);
      xhr.setRequestHeader('Idempotency-Key', this.idempotencyKey);
      xhr.upload.addEventListener('progress', (event) => {
        if (!event.lengthComputable) return;
        const percent = Math.floor((event.loaded / event.total) * 100);
        bar.value = percent;
        const seconds = (performance.now() - started) / 1000;
        const rate = seconds > 0.2 ? ` · ${bytes(event.loaded / seconds)}/s` : '';
        text.textContent = `${bytes(Math.min(event.loaded, total))} of ${bytes(total)}${rate}`;
      });
      xhr.addEventListener('load', () => resolve({
        status: xhr.status,
        body: xhr.responseText,
        retryAfter: xhr.getResponseHeader('Retry-After'),
      }));
      xhr.addEventListener('error', () => resolve({ status: 0, body: '' }));
      xhr.addEventListener('abort', () => resolve({ status: -1, body: '' }));
      xhr.send(this.form());
    });
    this.xhr = null;
    if (answer.status === -1 || this.removed) return; // cancelled by the user

    let body = null;
    try {
      body = JSON.parse(answer.body);
    } catch {
      body = null;
    }
    if (answer.status === 200 || answer.status === 202) {
      if (!body || typeof body.job_id !== 'string') {
        this.uploadFailed('The server answered without a job id.', true);
        return;
      }
      bar.value = 100;
      text.textContent = `${bytes(total)} sent`;
      this.jobId = body.job_id;
      this.root.dataset.jobId = body.job_id;
      this.status = body.status || 'pending';
      this.startFollowing();
      return;
    }
    const detail = (body && (body.detail || (body.error && body.error.message))) ||
      (answer.status === 0 ? 'the connection failed' : `HTTP ${answer.status}`);
    const retryAfter = Number(answer.retryAfter);
    if ((answer.status === 429 || answer.status === 503) && answer.retryAfter !== null &&
        Number.isFinite(retryAfter) && retryAfter >= 0 && retryAfter <= MAX_RETRY_AFTER_S) {
      // Busy or over the rate limit: wait as asked, holding the queue (the next file would be
      // refused too), then upload again.
      const seconds = Math.max(1, Math.ceil(retryAfter));
      this.idempotencyKey = newKey();
      this.status = 'waiting';
      this.setBadge('Server busy', 'waiting');
      this.showError(`${detail}. Trying again in ${seconds} s…`);
      this.pause = new AbortController();
      await sleep(seconds * 1000, this.pause.signal);
      this.pause = null;
      if (this.removed || this.cancelled) return;
      await this.upload();
      return;
    }
    if (answer.status === 401) {
      auth.refused(detail);
      this.uploadFailed(`The server wants an API key. Upload again once it is set.`, false);
      // Upload again by itself once a key is accepted.
      auth.ready().then(() => {
        if (!this.removed && !this.cancelled && this.status === 'upload-failed') this.retry();
      });
      return;
    }
    // No answer: the job may exist; a retry with the same key finds it rather than duplicating it.
    this.uploadFailed(`Upload failed: ${detail}`, answer.status !== 0);
  }

  uploadFailed(message, answered) {
    this.status = 'upload-failed';
    if (answered) this.idempotencyKey = newKey();
    this.showError(message);
    this.setBadge('Not uploaded', 'failed');
    this.setButtons({ retry: true, dismiss: true });
  }

  retry() {
    if (this.status !== 'upload-failed' && !this.ended) return;
    if (this.ended) {
      // A new job for the same file: reset the card.
      this.idempotencyKey = newKey();
      this.jobId = null;
      delete this.root.dataset.jobId;
      this.progress = 0;
      this.stage = null;
      this.eta = null;
      this.doneStages = new Set();
      this.ended = false;
      this.cancelled = false;
      this.el('.work').hidden = true;
      this.el('.result').hidden = true;
      this.el('.upload-bar').value = 0;
      this.el('.upload-text').textContent = '';
    }
    // Options changed since (after a refusal, say): the upload is a new submission.
    const options = currentOptions();
    if (JSON.stringify(options) !== JSON.stringify(this.options)) {
      this.options = options;
      this.idempotencyKey = newKey();
    }
    this.status = 'queued';
    this.showError('');
    this.setBadge('Waiting to upload', 'waiting');
    this.setButtons({ cancel: true });
    enqueueUpload(this);
  }

  async cancel() {
    if (this.xhr) {
      this.cancelled = true;
      this.xhr.abort();
      this.finish('cancelled', 'Upload cancelled.');
      return;
    }
    if (!this.jobId) {
      this.cancelled = true;
      if (this.pause) this.pause.abort();
      this.finish('cancelled', 'Cancelled before upload.');
      return;
    }
    if (this.ended) return;
    const button = this.el('.cancel');
    button.disabled = true;
    try {
      const response = await api(`/jobs/${encodeURIComponent(this.jobId)}`, { method: 'DELETE' });
      if (!response.ok && response.status !== 409) {
        this.showError(`Could not cancel: ${await errorDetail(response)}`);
      }
      // The event stream brings the `cancelled` event (or the job's real end, on 409).
    } catch (error) {
      this.showError(`Could not cancel: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  remove() {
    this.removed = true;
    if (this.xhr) this.xhr.abort();
    if (this.pause) this.pause.abort();
    if (this.follow) this.follow.abort();
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    if (this.mediaUrl) URL.revokeObjectURL(this.mediaUrl);
    const next = this.root.nextElementSibling || this.root.previousElementSibling;
    this.root.remove();
    const focusable = next ? $('button:not([hidden])', next) : null;
    (focusable || $('#file-input')).focus();
  }

  // --- following the job ----------------------------------------------------------------------

  startFollowing() {
    this.el('.work').hidden = false;
    this.setBadge('Queued', 'running');
    this.setButtons({ cancel: true });
    this.update({ status: this.status, progress: 0, kind: 'submitted' });
    this.follow = new AbortController();
    this.followEvents(this.follow.signal).catch((error) => {
      if (!this.removed) this.showError(`Lost track of the job: ${error.message}`);
    });
  }

  /** Follows the job to its end: by its event stream while a connection can be spared for it
   * (MAX_LIVE_STREAMS) and the stream works, by polling /status otherwise. */
  async followEvents(signal) {
    const stream = { lastId: null };
    let failures = 0; // streams in a row that broke
    let polls = 0; // polls since the stream was given up
    while (!this.ended && !signal.aborted) {
      const streamWanted = failures < MAX_STREAM_FAILURES || polls >= STREAM_RETRY_POLLS;
      if (streamWanted && liveStreams.open < MAX_LIVE_STREAMS) {
        polls = 0;
        liveStreams.open += 1;
        let outcome;
        try {
          outcome = await this.readStream(signal, stream);
        } finally {
          liveStreams.open -= 1;
        }
        if (outcome === 'unauthorized') {
          await auth.ready();
          continue;
        }
        if (outcome === 'over' || this.ended || signal.aborted) {
          // 204: the job has ended and we have its last event: read where it stands.
          if (!this.ended && !signal.aborted) await this.pollOnce(signal);
          if (!this.ended && !signal.aborted) await sleep(POLL_INTERVAL_MS, signal);
          continue;
        }
        failures = outcome === 'broken-after-events' ? 1 : failures + 1;
        this.el('.work-detail').textContent = ' · connection lost, reconnecting…';
        await sleep(backoff(failures - 1), signal);
        continue;
      }
      // No stream for now: poll, and take a stream when one is free (or worth another try).
      const answered = await this.pollOnce(signal);
      if (answered === 'unauthorized') {
        await auth.ready();
        continue;
      }
      if (failures >= MAX_STREAM_FAILURES) polls += 1;
      if (!this.ended) await sleep(answered ? POLL_INTERVAL_MS : backoff(3), signal);
    }
  }

  /** Reads the job's event stream once, after `stream.lastId`. Returns 'ended' (the job or this
   * card), 'over' (204: no event after ours), 'unauthorized', or 'broken' ('broken-after-events'
   * when some events came first). */
  async readStream(signal, stream) {
    // Its own abort: the card's, or a stream silent for too long.
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    signal.addEventListener('abort', stop, { once: true });
    let silence = setTimeout(stop, STREAM_SILENCE_MS);
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(stop, STREAM_SILENCE_MS);
    };
    let received = false;
    try {
      const headers = { Accept: 'text/event-stream' };
      if (stream.lastId !== null) headers['Last-Event-ID'] = stream.lastId;
      const response = await api(`/events/${encodeURIComponent(this.jobId)}`,
        { headers, signal: attempt.signal });
      if (response.status === 204) return 'over';
      if (!response.ok || !response.body) {
        const detail = await errorDetail(response);
        if (response.status === 404 || response.status === 400) {
          this.finish('failed', `The server does not know this job: ${detail}`);
          return 'ended';
        }
        return 'broken';
      }
      heard();
      for await (const event of readEvents(response.body, heard)) {
        if (event.id !== null) stream.lastId = event.id;
        received = true;
        let payload;
        try {
          payload = JSON.parse(event.data);
        } catch {
          continue;
        }
        if (payload && typeof payload === 'object') {
          this.update({ ...payload, kind: payload.kind || event.type });
        }
        if (this.ended) return 'ended';
      }
      // The stream ended before the job: open it again after the last event we have.
    } catch (error) {
      if (signal.aborted) return 'ended';
      if (error.status === 401) return 'unauthorized';
    } finally {
      clearTimeout(silence);
      signal.removeEventListener('abort', stop);
      attempt.abort(); // lets go of the connection, whatever is left of the body
    }
    return received ? 'broken-after-events' : 'broken';
  }

  /** Reads the job's state once through GET /status. Returns true when answered, false when
   * not (the card says so), or 'unauthorized'. */
  async pollOnce(signal) {
    try {
      const response = await api(`/status/${encodeURIComponent(this.jobId)}`, { signal });
      if (response.status === 404) {
        this.finish('failed', 'The server no longer knows this job.');
        return true;
      }
      if (!response.ok) throw new HttpError(response.status, await errorDetail(response));
      const body = await response.json();
      this.update({
        kind: FINAL_STATUSES.has(body.status) ? body.status : 'status',
        status: body.status,
        progress: body.progress,
        stage: STEP_STAGE[body.step] || null,
        eta_s: body.eta_seconds,
        duration_s: body.duration_s,
        error_message: body.error_message,
      });
      return true;
    } catch (error) {
      if (signal.aborted) return true;
      if (error.status === 401) return 'unauthorized';
      if (!this.ended) {
        this.el('.work-detail').textContent = ` · cannot reach the server (${error.message}); retrying…`;
      }
      return false;
    }
  }

  /** Applies an event (or a status answer) to the card. */
  update(event) {
    if (this.ended) return;
    const kind = event.kind;
    const status = event.status;
    if (Number.isFinite(event.progress)) {
      this.progress = Math.max(this.progress, Math.min(100, Math.round(event.progress)));
    }
    if (Number.isFinite(event.duration_s)) this.duration = event.duration_s;
    if (event.stage && event.stage !== this.stage) {
      this.stage = event.stage;
      this.eta = null;
    }
    if (Number.isFinite(event.eta_s)) this.eta = event.eta_s;
    else if (kind !== 'progress' && kind !== 'status') this.eta = null;

    if (kind === 'completed' || status === 'completed') {
      this.progress = 100;
      this.renderProgress('completed');
      this.completed();
      return;
    }
    if (kind === 'failed' || status === 'failed') {
      this.renderProgress('failed');
      this.finish('failed', event.error_message || 'The job failed.');
      return;
    }
    if (kind === 'cancelled' || status === 'cancelled') {
      this.renderProgress('cancelled');
      this.finish('cancelled', 'The job was cancelled.');
      return;
    }
    this.status = status || this.status;
    this.renderProgress(kind);
  }

  renderProgress(kind) {
    const bar = this.el('.work-bar');
    bar.value = this.progress;
    this.el('.work-percent').textContent = `${this.progress}\u00a0%`;
    this.root.dataset.progress = String(this.progress);
    if (kind === 'stage_completed' && this.stage) this.doneStages.add(this.stage);

    const current = STAGES.indexOf(this.stage);
    for (const item of this.root.querySelectorAll('.stages li')) {
      const stage = item.dataset.stage;
      const index = STAGES.indexOf(stage);
      let state = 'todo';
      if (kind === 'completed' || index < current || this.doneStages.has(stage)) state = 'done';
      else if (index === current) {
        if (kind === 'failed') state = 'failed';
        else if (kind !== 'cancelled') state = 'active';
      }
      item.dataset.state = state;
      if (state === 'active') item.setAttribute('aria-current', 'step');
      else item.removeAttribute('aria-current');
    }

    // The stage goes to the live region (announced when it changes); the figures, which change
    // every second, do not.
    let stage;
    let detail = '';
    if (kind === 'completed') stage = 'Done';
    else if (kind === 'failed') stage = 'Failed';
    else if (kind === 'cancelled') stage = 'Cancelled';
    else if (!this.stage || this.status === 'pending') stage = 'Queued: waiting for a worker';
    else {
      stage = STAGE_ACTIVITY[this.stage] || this.stage;
      const figures = [];
      if (this.stage === 'transcribe' && this.duration) {
        const [low, high] = STAGE_SPAN.transcribe;
        const fraction = Math.min(1, Math.max(0, (this.progress - low) / (high - low)));
        figures.push(`${clock(this.duration * fraction)} of ${clock(this.duration)}`);
      }
      if (this.eta !== null && this.eta > 0) figures.push(`about ${clock(this.eta)} left`);
      detail = figures.map((figure) => ` · ${figure}`).join('');
      this.setBadge(stage, 'running');
    }
    const live = this.el('.work-stage');
    if (live.textContent !== stage) live.textContent = stage;
    this.el('.work-detail').textContent = detail;
  }

  finish(status, message) {
    this.ended = true;
    this.status = status;
    if (this.follow) this.follow.abort();
    this.setBadge(status === 'cancelled' ? 'Cancelled' : 'Failed', status);
    this.showError(message);
    const hadFocus = document.activeElement === this.el('.cancel');
    this.setButtons({ retry: true, dismiss: true });
    if (hadFocus) this.el('.retry').focus();
    this.root.dataset.status = status;
  }

  async completed() {
    this.ended = true;
    if (this.follow) this.follow.abort();
    this.status = 'completed';
    this.setBadge('Completed', 'completed');
    const hadFocus = document.activeElement === this.el('.cancel');
    this.setButtons({ dismiss: true });
    if (hadFocus) this.el('.dismiss').focus();
    const path = `/result/${encodeURIComponent(this.jobId)}`;
    for (let attempt = 0; attempt < 20 && !this.removed; attempt += 1) {
      try {
        const response = await api(path);
        if (response.status === 200) {
          const body = await response.json();
          this.showError('');
          this.renderResult(body.result || {});
          this.root.dataset.status = 'completed';
          return;
        }
        if (response.status !== 202 && response.status < 500) {
          this.showError(`Cannot read the result: ${await errorDetail(response)}`);
          return;
        }
      } catch (error) {
        if (error.status === 401) {
          await auth.ready();
          continue;
        }
        this.showError(`Cannot read the result yet (${error.message}); retrying…`);
      }
      await sleep(backoff(attempt));
    }
  }

  // --- the result -----------------------------------------------------------------------------

  renderResult(result) {
    this.el('.result').hidden = false;
    this.renderPlayer();

    const detection = result.language_detection || {};
    const code = typeof detection.language === 'string' ? detection.language : '';
    let language = code ? `${languageName(code)} (${code})` : 'unknown';
    if (Number.isFinite(detection.probability) && detection.source !== 'user') {
      language += ` · ${Math.round(detection.probability * 100)}\u00a0%`;
    }
    if (result.task === 'translate') language += ', translated to English';
    this.el('.language').textContent = language;
    this.el('.duration').textContent = Number.isFinite(result.duration_s) ? clock(result.duration_s) : '—';
    const words = result.stats && Number.isFinite(result.stats.words) ? result.stats.words : null;
    this.el('.words-count').textContent = words === null ? '—' : String(words);
    this.el('.model').textContent = typeof result.model === 'string' ? result.model : '—';

    const topics = this.el('.topics');
    topics.replaceChildren();
    for (const topic of Array.isArray(result.topics) ? result.topics : []) {
      if (!topic || typeof topic.text !== 'string') continue;
      const item = document.createElement('li');
      item.textContent = topic.text;
      if (Number.isFinite(topic.score)) item.title = `score ${topic.score.toFixed(2)}`;
      topics.append(item);
    }
    this.el('.topics-box').hidden = topics.children.length === 0;

    const base = baseName(this.file.name);
    for (const link of this.root.querySelectorAll('.download')) {
      const format = link.dataset.format;
      link.href = `/result/${encodeURIComponent(this.jobId)}?format=${format}`;
      link.download = `${base}.${format}`;
      link.addEventListener('click', (event) => {
        event.preventDefault();
        this.download(link, format);
      });
    }

    const list = this.el('.segments');
    const items = document.createDocumentFragment();
    const segments = Array.isArray(result.segments) ? result.segments : [];
    segments.forEach((segment, index) => {
      if (segment && typeof segment === 'object') items.append(this.segmentItem(segment, index));
    });
    if (items.childNodes.length === 0) {
      const empty = document.createElement('li');
      empty.className = 'empty';
      empty.textContent = typeof result.transcript === 'string' && result.transcript
        ? result.transcript
        : 'No speech was found.';
      items.append(empty);
    }
    list.classList.toggle('long', items.childNodes.length > LONG_TRANSCRIPT);
    list.replaceChildren(items);
    this.indexSegments(list);
    list.addEventListener('click', (event) => this.seekTo(event));
  }

  /** The segments by start time, each with the latest end up to it, for highlight(). */
  indexSegments(list) {
    const timeline = Array.from(list.querySelectorAll('.segment'), (button) => ({
      button,
      start: Number(button.dataset.start),
      end: Number(button.dataset.end),
      reach: 0,
    })).sort((a, b) => a.start - b.start);
    let reach = -Infinity;
    for (const entry of timeline) {
      reach = Math.max(reach, entry.end);
      entry.reach = reach;
    }
    this.timeline = timeline;
    this.lit = new Set();
  }

  segmentItem(segment, index) {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'segment';
    const start = Number(segment.start) || 0;
    const end = Number(segment.end) || start;
    button.dataset.start = String(start);
    button.dataset.end = String(end);
    button.dataset.index = String(index);

    const time = document.createElement('span');
    time.className = 'segment-time';
    time.textContent = `${clock(start, true)} – ${clock(end, true)}`;
    button.append(time);

    const text = document.createElement('span');
    text.className = 'segment-text';
    if (Number.isInteger(segment.channel)) {
      const channel = document.createElement('span');
      channel.className = 'channel';
      channel.textContent = `Channel ${segment.channel}`;
      text.append(channel, ' ');
    }
    const words = Array.isArray(segment.words)
      ? segment.words.filter((word) => word && typeof word === 'object')
      : [];
    if (words.length > 0) {
      words.forEach((word, position) => {
        const span = document.createElement('span');
        span.className = 'word';
        span.dataset.start = String(Number(word.start) || start);
        span.dataset.end = String(Number(word.end) || end);
        span.textContent = String(word.word ?? '').trim();
        if (position > 0) text.append(' ');
        text.append(span);
      });
    } else {
      text.append(String(segment.text ?? '').trim());
    }
    button.append(text);
    button.setAttribute('aria-label', `Play from ${clock(start)}: ${String(segment.text ?? '').trim()}`);
    item.append(button);
    return item;
  }

  renderPlayer() {
    const holder = this.el('.player');
    if (holder.firstChild) return;
    const type = this.file.type || '';
    const video = type.startsWith('video/') || /\.(mp4|m4v|mkv|mov|webm|avi|ogv)$/i.test(this.file.name);
    const player = document.createElement(video ? 'video' : 'audio');
    player.controls = true;
    player.preload = 'metadata';
    player.className = 'media';
    this.mediaUrl = URL.createObjectURL(this.file);
    player.src = this.mediaUrl;
    player.setAttribute('aria-label', `Media: ${this.file.name}`);
    player.addEventListener('error', () => {
      const note = document.createElement('p');
      note.className = 'hint';
      note.textContent = 'This browser cannot play this file; the times still hold.';
      if (!holder.querySelector('.hint')) holder.append(note);
    });
    player.addEventListener('timeupdate', () => this.highlight(player.currentTime));
    player.addEventListener('seeked', () => this.highlight(player.currentTime));
    holder.append(player);
    this.player = player;
  }

  seekTo(event) {
    const segment = event.target.closest('.segment');
    if (!segment || !this.player) return;
    const word = event.target.closest('.word');
    const start = Number((word || segment).dataset.start) || 0;
    this.player.currentTime = start;
    this.highlight(start);
    const playing = this.player.play();
    if (playing && playing.catch) playing.catch(() => {});
  }

  /** Marks the segments playing at `time` and their word being said. Runs on every
   * `timeupdate`: it finds them by binary search and touches only those it marks or unmarks,
   * however long the transcript. */
  highlight(time) {
    const timeline = this.timeline || [];
    let low = 0;
    let high = timeline.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (timeline[middle].start <= time) low = middle + 1;
      else high = middle;
    }
    // Segments may overlap (the channels of a split recording): go back while one may still run.
    const playing = new Set();
    for (let index = low - 1; index >= 0 && timeline[index].reach > time; index -= 1) {
      if (timeline[index].end > time) playing.add(timeline[index]);
    }
    const before = this.lit || new Set();
    for (const entry of before) {
      if (!playing.has(entry)) this.mark(entry.button, false, time);
    }
    for (const entry of playing) this.mark(entry.button, true, time);
    this.lit = playing;
    // While it plays, the transcript follows: a segment that begins out of sight is scrolled to.
    const next = Array.from(playing).find((entry) => !before.has(entry));
    if (next && this.player && !this.player.paused) this.reveal(next.button);
  }

  /** Scrolls the transcript (not the page) to show `segment`, a third of the way down. */
  reveal(segment) {
    const list = this.el('.segments');
    const box = list.getBoundingClientRect();
    const item = segment.getBoundingClientRect();
    if (item.top >= box.top && item.bottom <= box.bottom) return;
    list.scrollTop += item.top - box.top - box.height / 3;
  }

  mark(segment, active, time) {
    segment.classList.toggle('playing', active);
    if (active) segment.setAttribute('aria-current', 'true');
    else segment.removeAttribute('aria-current');
    for (const word of segment.querySelectorAll('.word')) {
      word.classList.toggle('spoken', active && time >= Number(word.dataset.start) &&
        time < Number(word.dataset.end));
    }
  }

  async download(link, format) {
    link.setAttribute('aria-busy', 'true');
    try {
      const response = await api(link.pathname + link.search);
      if (!response.ok) throw new HttpError(response.status, await errorDetail(response));
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      this.urls.push(url);
      const anchor = document.createElement('a');
      anchor.href = url;
      anchor.download = link.download || `transcript.${format}`;
      anchor.hidden = true;
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      // Revoked later: revoking at once can cut the download short.
      setTimeout(() => {
        URL.revokeObjectURL(url);
        this.urls = this.urls.filter((kept) => kept !== url);
      }, 60000);
    } catch (error) {
      this.showError(`Download failed: ${error.message}`);
    } finally {
      link.removeAttribute('aria-busy');
    }
  }
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const random = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(random, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function currentOptions() {
  const language = $('#opt-language').value.trim().toLowerCase();
  return {
    language: language === 'auto' ? '' : language,
    model: $('#opt-model').value,
    words: $('#opt-words').checked,
    translate: $('#opt-translate').checked,
  };
}

function addFiles(fileList) {
  const files = Array.from(fileList || []).filter((file) => file && file.size >= 0);
  const options = currentOptions();
  for (const file of files) enqueueUpload(new Job(file, options));
}

// ---------------------------------------------------------------------------------------------
// Wiring

function setUpDrop() {
  const zone = $('#drop-zone');
  const input = $('#file-input');
  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
  });
  let depth = 0;
  const hasFiles = (event) => Array.from(event.dataTransfer ? event.dataTransfer.types : []).includes('Files');
  window.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    zone.classList.add('dragging');
  });
  window.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove('dragging');
  });
  window.addEventListener('dragover', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  // Files dropped anywhere on the page are taken, rather than opened by the browser.
  window.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    zone.classList.remove('dragging');
    addFiles(event.dataTransfer.files);
  });
}

function setUpKey() {
  $('#key-forget').hidden = !auth.key;
  $('#key-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = $('#key-input').value.trim();
    if (!key) return;
    auth.set(key);
    $('#key-message').textContent = 'Checking…';
    await probeUntilAnswered();
  });
  $('#key-forget').addEventListener('click', async () => {
    auth.set('');
    auth.accepted = false;
    await probeUntilAnswered();
  });
}

function main() {
  fillLanguages();
  setUpKey();
  setUpDrop();
  probeUntilAnswered();
}

main();
