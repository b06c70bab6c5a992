// Strata capacity dashboard: renders GET /v1/capacity and follows its SSE stream.
// No build step and no third-party code; everything is served by the region itself.
'use strict';

const $ = (sel) => document.querySelector(sel);
const RECONNECT_MS = 2000;
let token = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmtRate(x) { return x >= 100 ? x.toFixed(0) : x.toFixed(1); }
function fmtMs(x) { return x >= 100 ? x.toFixed(0) : x.toFixed(2); }
function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function setStatus(state, text) {
  const s = $('#status');
  s.dataset.state = state;
  s.textContent = text;
}

function spark(values, second) {
  const w = 90, h = 22;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const all = values.concat(second || []);
  const max = Math.max(1e-9, ...all);
  const line = (vs, cls) => {
    if (vs.length === 0) return;
    const step = vs.length > 1 ? w / (vs.length - 1) : 0;
    const pts = vs.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
    const pl = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    pl.setAttribute('points', pts.join(' '));
    if (cls) pl.setAttribute('class', cls);
    svg.append(pl);
  };
  line(values);
  if (second) line(second, 'second');
  return svg;
}

function card(label, value, field) {
  return el('div', { class: 'card' },
    el('div', { class: 'label' }, label),
    el('div', { class: 'value', 'data-field': field }, value));
}

function nodes(view) {
  return (view.region ? [view.region] : []).concat(view.pops);
}

function render(view) {
  const region = view.region;
  $('#region-name').textContent = region ? `region ${region.load.node}` : 'region (no snapshot yet)';
  const all = nodes(view);
  const sum = (f) => all.reduce((a, n) => a + f(n), 0);

  const cards = $('#cards');
  cards.replaceChildren(
    card('POPs reporting', view.pops.filter((p) => !p.stale).length, 'pops-live'),
    card('local req/s', fmtRate(sum((n) => n.now.local_rate)), 'local-rate'),
    card('forwarded req/s', fmtRate(sum((n) => n.now.forwarded_rate)), 'forwarded-rate'),
    card('cold starts/s', fmtRate(sum((n) => n.now.cold_start_rate)), 'cold-rate'),
    card('warm instances', sum((n) => n.load.warm_instances), 'warm'),
    card('warm memory', fmtBytes(sum((n) => n.load.warm_memory_bytes)), 'warm-memory'),
    card('region queue', region ? region.load.queue_depth : 0, 'queue'),
    card('dead letters', region ? region.load.dlq_depth : 0, 'dlq'),
  );
  const rt = view.runtime;
  if (rt) {
    cards.append(
      card(`runtime ${rt.next} promoted`, rt.promoted, 'canary-promoted'),
      card(`pinned to ${rt.current}`, rt.pinned, 'canary-pinned'),
      card(`canary (${rt.canary_percent}%) undecided`, rt.undecided, 'canary-undecided'),
    );
  }
  $('#canary tbody').replaceChildren(...(rt ? rt.pinned_functions : []).map((f) =>
    el('tr', { 'data-function': f },
      el('td', { class: 'text' }, f),
      el('td', { class: 'text' }, `pinned to ${rt.current}: worse on ${rt.next}`))));

  const ro = view.rollouts;
  if (ro) {
    cards.append(
      card('rollouts judged', ro.judged, 'rollouts-judged'),
      card('rolled back', ro.rolled_back.length, 'rollouts-rolled-back'),
    );
  }
  $('#rollbacks tbody').replaceChildren(...(ro ? ro.rolled_back : []).map((r) =>
    el('tr', { 'data-alias': r.alias },
      el('td', { class: 'text' }, r.alias),
      el('td', { class: 'text' },
        `version ${r.new} failed ${r.new_failures} of ${r.new_invocations}: back to ${r.to}`),
      el('td', { class: 'text' }, new Date(r.at_ms).toISOString()))));

  const body = $('#nodes tbody');
  body.replaceChildren(...all.map((n) => {
    const l = n.load;
    const reasons = l.forwards_by_reason.map(([r, c]) => `${r} ${c}`).join(', ') || '–';
    const hist = n.history;
    const cell = (field, value, cls) => el('td', { 'data-field': field, class: cls || '' }, value);
    const chart = (vs, second) => el('td', {}, spark(vs, second));
    return el('tr', { 'data-node': l.node, class: n.stale ? 'stale' : '' },
      cell('node', l.node, 'text'),
      cell('tier', l.tier, 'text'),
      cell('state', n.stale ? `stale ${(n.age_ms / 1000).toFixed(0)}s` : 'live', 'text'),
      cell('local-rate', fmtRate(n.now.local_rate)),
      cell('forwarded-rate', fmtRate(n.now.forwarded_rate)),
      chart(hist.map((p) => p.local_rate), hist.map((p) => p.forwarded_rate)),
      cell('cold-rate', fmtRate(n.now.cold_start_rate)),
      cell('p50', fmtMs(n.now.p50_ms)),
      cell('p99', fmtMs(n.now.p99_ms)),
      chart(hist.map((p) => p.p99_ms)),
      cell('warm', l.warm_instances),
      chart(hist.map((p) => p.warm_instances)),
      cell('warm-memory', fmtBytes(l.warm_memory_bytes)),
      cell('in-flight', `${l.in_flight} / ${l.concurrency_limit}`),
      cell('queue', l.queue_depth),
      cell('dlq', l.dlq_depth),
      cell('executed', l.totals.executed),
      cell('forwarded', l.totals.forwarded),
      cell('cold-starts', l.totals.cold_starts),
      cell('forwards-by-reason', reasons, 'text'),
    );
  }));

  $('#budgets tbody').replaceChildren(...(view.budgets || []).map((b) => {
    const share = b.limit ? Math.min(1, b.charged / b.limit) : 0;
    const bar = el('span', { class: 'bar' + (share >= 1 ? ' full' : '') }, el('span', { style: `width:${(share * 100).toFixed(0)}%` }));
    return el('tr', { 'data-budget': b.tenant },
      el('td', { class: 'text' }, b.tenant),
      el('td', { 'data-field': 'charged' }, b.charged),
      el('td', { 'data-field': 'leased' }, b.leased),
      el('td', { 'data-field': 'limit' }, b.limit),
      el('td', { 'data-field': 'hard-max' }, b.hard_max),
      el('td', {}, bar));
  }));

  $('#certificates tbody').replaceChildren(...(view.certificates || []).map((c) => {
    const days = c.expires_in_s / 86400;
    const left = c.expires_in_s <= 0 ? 'expired' : days >= 1 ? `${days.toFixed(0)} d` : `${(c.expires_in_s / 3600).toFixed(1)} h`;
    return el('tr', { 'data-certificate': c.host, class: c.expires_in_s < 14 * 86400 ? 'warn' : '' },
      el('td', { class: 'text' }, c.host),
      el('td', { class: 'text' }, new Date(c.not_after * 1000).toISOString().slice(0, 10)),
      el('td', { 'data-field': 'expires-in' }, left));
  }));

  const tenants = [];
  for (const n of all) for (const t of n.load.tenants) tenants.push([n.load.node, t]);
  $('#tenants tbody').replaceChildren(...tenants.map(([node, t]) => {
    const share = t.limit ? Math.min(1, t.in_flight / t.limit) : 0;
    const bar = el('span', { class: 'bar' + (share >= 1 ? ' full' : '') }, el('span', { style: `width:${(share * 100).toFixed(0)}%` }));
    return el('tr', { 'data-node': node, 'data-tenant': t.tenant },
      el('td', { class: 'text' }, node),
      el('td', { class: 'text' }, t.tenant),
      el('td', { 'data-field': 'in-flight' }, t.in_flight),
      el('td', { 'data-field': 'peak' }, t.peak_in_flight),
      el('td', { 'data-field': 'limit' }, t.limit == null ? '–' : t.limit),
      el('td', {}, bar));
  }));

  const fns = [];
  for (const n of all) {
    const secs = Math.max(1e-3, n.load.window_ms / 1000);
    for (const f of n.load.functions) fns.push([n.load.node, f, f.in_window / secs]);
  }
  fns.sort((a, b) => b[2] - a[2] || (b[1].executed + b[1].forwarded) - (a[1].executed + a[1].forwarded));
  $('#functions tbody').replaceChildren(...fns.slice(0, 30).map(([node, f, rate]) =>
    el('tr', { 'data-node': node, 'data-function': f.function },
      el('td', { class: 'text' }, node),
      el('td', { class: 'text' }, f.function),
      el('td', { 'data-field': 'rate' }, fmtRate(rate)),
      el('td', { 'data-field': 'executed' }, f.executed),
      el('td', { 'data-field': 'forwarded' }, f.forwarded),
      el('td', { 'data-field': 'cold-starts' }, f.cold_starts))));

  const mb = (v) => `${v.toFixed(1)} Mi`;
  $('#memory tbody').replaceChildren(...(view.memory || []).map((f) =>
    el('tr', { 'data-function': f.function },
      el('td', { class: 'text' }, f.function),
      el('td', { 'data-field': 'p50' }, mb(f.memory.observed_peak_mb.p50)),
      el('td', { 'data-field': 'p90' }, mb(f.memory.observed_peak_mb.p90)),
      el('td', { 'data-field': 'p99' }, mb(f.memory.observed_peak_mb.p99)),
      el('td', { 'data-field': 'recommended' }, `${f.memory.recommended_mb} Mi`),
      el('td', { 'data-field': 'samples' }, f.memory.samples))));

  document.body.dataset.revision = String(view.revision);
}

function authHeaders() { return { authorization: 'Bearer ' + token }; }

async function loadOnce() {
  const resp = await fetch('/v1/capacity', { headers: authHeaders() });
  if (resp.status === 401 || resp.status === 403) {
    const body = await resp.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || `refused (${resp.status})`);
  }
  if (!resp.ok) throw new Error(`capacity: HTTP ${resp.status}`);
  render(await resp.json());
}

// EventSource cannot send an authorization header, so the stream is read with fetch and
// parsed here: events are separated by a blank line, data lines start with "data:".
async function follow() {
  for (;;) {
    try {
      const resp = await fetch('/v1/capacity/stream', { headers: authHeaders() });
      if (!resp.ok || !resp.body) throw new Error(`stream: HTTP ${resp.status}`);
      setStatus('live', 'live');
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (data) render(JSON.parse(data));
        }
      }
      setStatus('error', 'stream ended; reconnecting…');
    } catch (e) {
      setStatus('error', `${e.message}; reconnecting…`);
    }
    await new Promise((r) => setTimeout(r, RECONNECT_MS));
  }
}

async function open(t) {
  token = t;
  try {
    await loadOnce();
  } catch (e) {
    $('#login').hidden = false;
    $('#main').hidden = true;
    $('#login-error').textContent = e.message;
    setStatus('error', 'not signed in');
    return;
  }
  sessionStorage.setItem('strata-operator-token', t);
  $('#login').hidden = true;
  $('#main').hidden = false;
  follow();
}

function main() {
  // The token may come in the URL fragment (never sent to the server) or from this tab's
  // session storage; otherwise ask for it.
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) history.replaceState(null, '', location.pathname);
  const t = fromHash || sessionStorage.getItem('strata-operator-token');
  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    open($('#token').value);
  });
  if (t) open(t); else { $('#login').hidden = false; setStatus('error', 'not signed in'); }
}

main();
