// SwiftChat admin page: polls GET /admin/api/cluster, draws the nodes, the
// rooms, the totals and a 10-minute chart, and asks for a confirmation
// before a drain or a cluster-wide shutdown. No build step, no external
// assets. Data only ever reaches the DOM as text (textContent), never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'swiftchat-admin-token';
  const POLL_MS = 2000;
  const WINDOW_MS = 10 * 60 * 1000;
  // 10 minutes at one point per poll, with room for faster polls.
  const MAX_POINTS = 600;

  const $ = (id) => document.getElementById(id);
  const history = [];
  let token = null;
  let timer = null;
  let inFlight = false;
  let lastView = null;

  // ---- token -------------------------------------------------------------

  function loadToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }
  function saveToken(t) {
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* private mode: keep in memory */ }
  }
  function forgetToken() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
    token = null;
  }

  function showTokenView(error) {
    stopPolling();
    document.body.dataset.view = 'token';
    $('dash').hidden = true;
    $('token-view').hidden = false;
    const err = $('token-error');
    err.textContent = error || '';
    err.hidden = !error;
    $('token-input').value = '';
    $('token-input').focus();
  }

  function showDashboard() {
    document.body.dataset.view = 'dash';
    $('token-view').hidden = true;
    $('dash').hidden = false;
    startPolling();
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) {
      showTokenView('Paste a token first.');
      return;
    }
    token = value;
    saveToken(value);
    showDashboard();
  });

  $('signout').addEventListener('click', () => {
    forgetToken();
    showTokenView('');
  });

  // ---- polling -----------------------------------------------------------

  function startPolling() {
    stopPolling();
    poll();
    timer = setInterval(poll, POLL_MS);
  }
  function stopPolling() {
    if (timer) clearInterval(timer);
    timer = null;
  }

  async function poll() {
    if (inFlight || !token) return;
    inFlight = true;
    try {
      const res = await fetch('/admin/api/cluster', {
        headers: { Authorization: 'Bearer ' + token },
        cache: 'no-store',
      });
      if (res.status === 401) {
        forgetToken();
        showTokenView('The server refused this token: it must be a valid, unexpired admin token.');
        return;
      }
      if (!res.ok) {
        setStatus('error', 'Server answered ' + res.status);
        return;
      }
      const view = await res.json();
      lastView = view;
      record(view);
      render(view);
      setStatus('live', 'Updated ' + new Date().toLocaleTimeString());
    } catch (_) {
      setStatus('error', 'Cannot reach the server');
    } finally {
      inFlight = false;
    }
  }

  function setStatus(state, text) {
    const s = $('status');
    s.dataset.state = state;
    s.textContent = text;
  }

  function record(view) {
    const now = Date.now();
    history.push({
      t: now,
      rate: Number(view.totals.messages_in_per_sec) || 0,
      conns: Number(view.totals.connections) || 0,
    });
    while (history.length > MAX_POINTS || (history.length && history[0].t < now - WINDOW_MS)) {
      history.shift();
    }
  }

  // ---- rendering (text only) ----------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmtRate(x) {
    const n = Number(x) || 0;
    return n >= 100 ? n.toFixed(0) : n.toFixed(1);
  }

  function fmtAge(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d';
  }

  function render(view) {
    const t = view.totals;
    $('t-nodes').textContent = t.nodes;
    $('t-connections').textContent = t.connections;
    $('t-logged-in').textContent = t.logged_in;
    $('t-rooms').textContent = t.rooms;
    $('t-in').textContent = fmtRate(t.messages_in_per_sec);
    $('t-out').textContent = fmtRate(t.messages_out_per_sec);
    renderNodes(view);
    renderRooms(view);
    drawChart();
  }

  const STATE_TEXT = { ready: 'ready', not_ready: 'not ready', draining: 'draining' };

  function renderNodes(view) {
    const list = $('node-list');
    const items = [];
    for (const n of view.nodes) {
      const li = el('li', 'node');
      li.dataset.nodeId = n.id;
      const head = el('div', 'node-head');
      const id = el('span', 'node-id', n.id);
      id.title = n.id;
      const badge = el('span', 'badge', STATE_TEXT[n.state] || n.state);
      badge.dataset.state = n.state;
      head.append(id, badge);
      const addr = el('div', 'node-addr', n.address);
      const stats = el('dl', 'node-stats');
      for (const [label, value] of [
        ['conns', n.connections],
        ['logged in', n.logged_in],
        ['in/s', fmtRate(n.messages_in_per_sec)],
        ['out/s', fmtRate(n.messages_out_per_sec)],
      ]) {
        const d = el('div');
        d.append(el('dt', null, label), el('dd', null, value));
        stats.append(d);
      }
      const foot = el('div', 'node-foot');
      const age = el('span', null,
        'up ' + fmtAge(view.generated_ms - n.started_ms) +
        ' · heartbeat ' + fmtAge(view.generated_ms - n.last_heartbeat_ms) + ' ago');
      const drain = el('button', 'btn outline-danger small drain', 'Drain');
      drain.type = 'button';
      drain.dataset.nodeId = n.id;
      drain.disabled = n.state === 'draining';
      drain.addEventListener('click', () => confirmDrain(n.id));
      foot.append(age, drain);
      li.append(head, addr, stats, foot);
      items.push(li);
    }
    list.replaceChildren(...items);
    if (!items.length) list.append(el('li', 'empty', 'No node has reported yet.'));
    $('nodes-note').textContent = view.nodes.length === 1 ? '1 node' : view.nodes.length + ' nodes';
  }

  function renderRooms(view) {
    const rows = [];
    for (const r of view.rooms) {
      const tr = el('tr');
      tr.dataset.room = r.name;
      const state = r.closed ? 'closed' : r.locked ? 'locked' : 'open';
      const badge = el('span', 'badge', state);
      badge.dataset.state = state;
      const stateCell = el('td');
      stateCell.append(badge);
      tr.append(el('td', 'room-name', '#' + r.name), el('td', 'num', r.users), stateCell,
        el('td', 'owner', r.owner === null || r.owner === undefined ? '—' : r.owner));
      rows.push(tr);
    }
    $('room-rows').replaceChildren(...rows);
    const total = view.totals.rooms;
    $('rooms-note').textContent = total > view.rooms.length
      ? 'busiest ' + view.rooms.length + ' of ' + total
      : total + (total === 1 ? ' room' : ' rooms');
  }

  // ---- chart ---------------------------------------------------------------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const canvas = $('chart');
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 40, r: 44, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const now = Date.now();
    const x = (t) => pad.l + pw * (1 - (now - t) / WINDOW_MS);
    const maxRate = niceMax(Math.max(0, ...history.map((p) => p.rate)));
    // Four grid steps: keep the connection ticks whole numbers.
    const maxConns = Math.ceil(niceMax(Math.max(0, ...history.map((p) => p.conns))) / 4) * 4;
    ctx.font = '11px ' + cssVar('--font');
    ctx.lineWidth = 1;
    ctx.strokeStyle = cssVar('--border');
    ctx.fillStyle = cssVar('--text-3');
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph * (i / 4);
      ctx.beginPath();
      ctx.moveTo(pad.l, y + 0.5);
      ctx.lineTo(pad.l + pw, y + 0.5);
      ctx.stroke();
      ctx.textAlign = 'right';
      ctx.fillText(String(+(maxRate * (1 - i / 4)).toFixed(2)), pad.l - 6, y + 4);
      ctx.textAlign = 'left';
      ctx.fillText(String(Math.round(maxConns * (1 - i / 4))), pad.l + pw + 6, y + 4);
    }
    ctx.textAlign = 'center';
    for (let m = 10; m >= 0; m -= 2) {
      ctx.fillText(m ? '-' + m + ' min' : 'now', x(now - m * 60000), h - 6);
    }
    const line = (color, key, max) => {
      if (!history.length) return;
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      history.forEach((p, i) => {
        const px = x(p.t);
        const py = pad.t + ph * (1 - p[key] / max);
        if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
      });
      if (history.length === 1) ctx.lineTo(x(history[0].t) + 2, pad.t + ph * (1 - history[0][key] / max));
      ctx.stroke();
    };
    line(cssVar('--chart-conn'), 'conns', maxConns);
    line(cssVar('--chart-in'), 'rate', maxRate);
  }

  window.addEventListener('resize', drawChart);

  // ---- actions ---------------------------------------------------------------

  function banner(kind, text) {
    const b = $('banner');
    b.dataset.kind = kind;
    $('banner-text').textContent = text;
    b.hidden = false;
  }
  $('banner-close').addEventListener('click', () => { $('banner').hidden = true; });

  // Opens the confirmation dialog; `action` runs on confirm and returns an
  // error text to keep the dialog open, or null to close it.
  function confirmAction({ title, text, ok, shutdown, action }) {
    const dialog = $('confirm-dialog');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = ok;
    $('shutdown-fields').hidden = !shutdown;
    $('shutdown-key').value = '';
    $('shutdown-reason').value = '';
    $('confirm-error').hidden = true;
    const form = $('confirm-form');
    form.onsubmit = async (e) => {
      e.preventDefault();
      if (e.submitter && e.submitter.value === 'cancel') {
        dialog.close();
        return;
      }
      $('confirm-ok').disabled = true;
      try {
        const error = await action();
        if (error) {
          $('confirm-error').textContent = error;
          $('confirm-error').hidden = false;
        } else {
          dialog.close();
        }
      } finally {
        $('confirm-ok').disabled = false;
      }
    };
    dialog.showModal();
    if (shutdown) $('shutdown-key').focus(); else $('confirm-cancel').focus();
  }

  function confirmDrain(nodeId) {
    confirmAction({
      title: 'Drain ' + nodeId + '?',
      text: 'Its clients are told to reconnect (they land on the other nodes) and the node stops. ' +
        'The rest of the cluster keeps running.',
      ok: 'Drain node',
      shutdown: false,
      action: async () => {
        let res;
        try {
          res = await fetch('/admin/nodes/' + encodeURIComponent(nodeId) + '/drain', {
            method: 'POST',
            headers: { Authorization: 'Bearer ' + token },
          });
        } catch (_) {
          return 'Cannot reach the server.';
        }
        if (res.status === 202) {
          banner('success', 'Node ' + nodeId + ' is draining.');
          poll();
          return null;
        }
        if (res.status === 404) return 'That node is no longer in the cluster.';
        if (res.status === 401) return 'The server refused the admin token.';
        return 'The server answered ' + res.status + '.';
      },
    });
  }

  $('shutdown-btn').addEventListener('click', () => {
    const nodes = lastView ? lastView.totals.nodes : '?';
    confirmAction({
      title: 'Shut down the whole cluster?',
      text: 'Every node (' + nodes + ') closes all its clients and exits; clients are told not to reconnect. ' +
        'This needs the shutdown key, which is not the admin token.',
      ok: 'Shut down',
      shutdown: true,
      action: async () => {
        const key = $('shutdown-key').value.trim();
        if (!key) return 'Enter the shutdown key.';
        const reason = $('shutdown-reason').value.trim();
        let res;
        try {
          res = await fetch('/admin/shutdown', {
            method: 'POST',
            headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
            body: JSON.stringify(reason ? { reason } : {}),
          });
        } catch (_) {
          return 'Cannot reach the server.';
        }
        if (res.status === 202) {
          banner('error', 'The cluster is shutting down.');
          return null;
        }
        if (res.status === 401) return 'Wrong shutdown key (or no key is configured on the server).';
        return 'The server answered ' + res.status + '.';
      },
    });
  });

  // ---- start -----------------------------------------------------------------

  token = loadToken();
  if (token) showDashboard(); else showTokenView('');
})();
