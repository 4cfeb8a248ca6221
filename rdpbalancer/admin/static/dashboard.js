// rdpbalancer dashboard: polls the admin API and renders it. Plain ES2020, no dependencies.
//
// SECURITY: user names (and most other strings here) come from unauthenticated clients. Every
// value is written with textContent or setAttribute, never innerHTML; the page's CSP forbids
// inline script as a second line of defence.
'use strict';

(() => {
  const POLL_MS = 1000; // the health checks of a busy farm change state within seconds
  const REQUEST_TIMEOUT_MS = 4000; // a loopback API answering slower than this is as good as gone
  const MAX_DECISIONS = 100; // rows shown; the API keeps the last 200
  const MAX_EVENTS = 50;
  const TOKEN_KEY = 'rdpbalancer.token'; // sessionStorage only: gone when the tab closes
  const REASONS = new Set(['sticky-hit', 'new', 'failover', 'routing-token', 'no-cookie', 'denied', 'no-server',
    'malformed', 'timeout', 'connect-failed', 'session', 'no-session', 'full', 'per-user', 'new-users-per-source']);
  const STATES = ['ready', 'drain', 'maint'];
  const STATE_HELP = {
    ready: 'Ready: takes new users and its sticky users',
    drain: 'Drain: no new users; users with a session here still reach it',
    maint: 'Maintenance: nobody; its sticky users are moved elsewhere at once',
  };

  const $ = (sel) => document.querySelector(sel);

  // -- DOM helpers: text only ----------------------------------------------------------------

  /** el('td', {class: 'num', title: 'x', data: {server: name}}, 'text', childNode, ...) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'data') for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(node, text) {
    const value = text === undefined || text === null ? '' : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  /** A status pill: kind "h" (health) or "a" (admin state); the value is an enum from the API. */
  function pill(kind, value, cls = '') {
    return el('span', {class: `pill ${kind}-${value} ${cls}`.trim()}, value);
  }

  function reasonPill(reason) {
    const known = REASONS.has(reason) ? reason : 'other';
    return el('span', {class: `pill reason r-${known}`, data: {reason: reason || ''}}, reason || '?');
  }

  // -- time ----------------------------------------------------------------------------------

  let clockOffsetS = 0; // balancer clock minus ours, from the HTTP Date header (1 s resolution)

  const nowS = () => Date.now() / 1000 + clockOffsetS;

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  /** "23:26:01" today, "Nov 24 23:26:01" on another day (in the browser's time zone). */
  function clock(ts) {
    if (!ts) return '–';
    const when = new Date((ts - clockOffsetS) * 1000);
    const time = when.toLocaleTimeString([], {hour12: false});
    if (when.toDateString() === new Date().toDateString()) return time;
    return `${when.toLocaleDateString([], {month: 'short', day: 'numeric'})} ${time}`;
  }

  const stamp = (ts) => (ts ? new Date((ts - clockOffsetS) * 1000).toLocaleString([], {hour12: false}) : '');

  // -- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status; // 0: the API could not be reached
    }
  }

  /** The token field is the one source of truth; sessionStorage only carries it across reloads. */
  const token = () => $('#token').value.trim();

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return ''; // storage disabled: the field still works for this page's lifetime
    }
  }

  async function api(path, {method = 'GET', body} = {}) {
    const headers = {Accept: 'application/json'};
    const secret = token();
    if (secret) headers.Authorization = `Bearer ${secret}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: 'no-store', credentials: 'same-origin', signal: abort.signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (err instanceof TypeError && /header/i.test(err.message)) {
        throw new ApiError(-1, 'the token contains characters that cannot be sent in a header');
      }
      throw new ApiError(0, abort.signal.aborted ? 'no answer in time' : 'cannot reach the admin API');
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data && typeof data.error === 'string' ? data.error : response.statusText;
      throw new ApiError(response.status, message || `HTTP ${response.status}`);
    }
    const date = Date.parse(response.headers.get('Date') || '');
    if (!Number.isNaN(date)) {
      const offset = (date - Date.now()) / 1000;
      clockOffsetS = Math.abs(offset) > 2 ? offset : 0; // ignore the header's own rounding
    }
    return data;
  }

  // -- header: version, configuration, live indicator ------------------------------------------

  async function loadVersion() {
    try {
      const spec = await api('/api/v1/openapi.json');
      setText($('#version'), `v${spec.info.version}`);
      return true;
    } catch {
      return false; // asked again after the next successful poll
    }
  }

  function renderConfig(cfg) {
    setText($('#config-file'), cfg.file);
    const loaded = $('#config-loaded');
    setText(loaded, clock(cfg.last_reload_at || cfg.loaded_at));
    loaded.title = stamp(cfg.last_reload_at || cfg.loaded_at);
    setText($('#config-reloads'), `${cfg.reloads_ok} ok, ${cfg.reloads_failed} failed`);
    setText($('#config-listen'), (cfg.listen || []).join(' '));
    const error = $('#config-error');
    error.hidden = !cfg.last_reload_error;
    setText(error, cfg.last_reload_error ? `last reload failed: ${cfg.last_reload_error}` : '');
    renderHa(cfg.ha);
  }

  /** The node's role in a keepalived pair: active (holds the virtual IP), standby, fault. */
  function renderHa(ha) {
    const badge = $('#ha-state');
    badge.hidden = !ha;
    if (!ha) return;
    setText(badge, ha.role);
    badge.dataset.role = ha.role;
    badge.title = ha.error || `keepalived: ${ha.state} since ${stamp(ha.since)}`;
  }

  function setLive(state, text) {
    const live = $('#live');
    live.dataset.state = state;
    setText($('#live-text'), text);
  }

  // -- pools and servers -----------------------------------------------------------------------

  const poolViews = new Map(); // pool name -> {root, meta, tbody, rows: Map(server -> row view)}

  function poolView(name) {
    let view = poolViews.get(name);
    if (view) return view;
    const meta = el('span', {class: 'pool-meta'});
    const tbody = el('tbody');
    const th = (cls, text, title) => el('th', {class: cls, title}, text);
    const head = el('tr', {},
      th('c-server', 'server'), th('c-state', 'state'), th('c-health', 'health'), th('c-check', 'check'),
      th('num c-weight', 'weight', 'weight in this pool'),
      th('num c-sessions', 'sessions', 'sessions relaying now'),
      th('num c-conns', 'conns', 'open connections counted by the balancing algorithm'),
      th('num c-homed', 'homed', 'users whose sticky entry points here'),
      th('num c-actions', 'actions', 'admin state (needs the admin token)'));
    const root = el('div', {class: 'pool', data: {pool: name}},
      el('div', {class: 'pool-head'}, el('span', {class: 'pool-name'}, name), meta),
      el('table', {class: 'grid servers'}, el('thead', {}, head), tbody));
    view = {root, meta, tbody, rows: new Map()};
    poolViews.set(name, view);
    return view;
  }

  function serverRow(pool, name) {
    const span = (cls, text) => el('span', {class: cls}, text);
    const v = {
      name: span('srv-name', name), address: span('address'),
      backup: span('pill backup', 'backup'), ramp: span('pill ramp'),
      statePill: span('pill admin-state'),
      override: span('override', 'override'),
      healthPill: span('pill health'), since: span('since health-since'),
      checkKind: span('check'), checkMeta: span('check-meta'), lastError: span('last-error'),
      weight: el('td', {class: 'num weight'}), sessions: el('td', {class: 'num sessions'}),
      connections: el('td', {class: 'num connections'}), homed: el('td', {class: 'num homed'}),
      buttons: {},
    };
    const actions = el('td', {class: 'actions'});
    for (const state of STATES) {
      const button = el('button', {type: 'button', class: 'btn', title: STATE_HELP[state],
        data: {action: state, server: name}}, state);
      v.buttons[state] = button;
      actions.append(button);
    }
    v.row = el('tr', {data: {server: name, pool}},
      el('td', {class: 'server'}, v.name, v.backup, v.ramp, v.address),
      el('td', {class: 'state'}, v.statePill, v.override),
      el('td', {class: 'health-cell'}, v.healthPill, v.since),
      el('td', {class: 'check-cell'}, v.checkKind, v.checkMeta, v.lastError),
      v.weight, v.sessions, v.connections, v.homed, actions);
    return v;
  }

  /** Update a row in place: elements stay, so hover, focus and a click in progress are not disturbed. */
  function updateServerRow(v, s, pool, balance) {
    const member = s.pools.find((p) => p.pool === pool) || {};
    const weight = member.weight;
    const cap = member.max_sessions === null || member.max_sessions === undefined ? null : member.max_sessions;
    setText(v.address, s.address);
    setClass(v.row, [s.health === 'down' ? 'row-down' : '', s.admin_state !== 'ready' ? `row-${s.admin_state}` : '']
      .join(' ').trim());
    v.row.dataset.health = s.health;
    v.row.dataset.state = s.admin_state;

    setText(v.statePill, s.admin_state);
    setClass(v.statePill, `pill admin-state a-${s.admin_state}`);
    v.override.hidden = !s.admin_state_override;
    v.override.title = `set at run time; the configuration says ${s.admin_state_config}`;

    setText(v.healthPill, s.health);
    setClass(v.healthPill, `pill health h-${s.health}`);
    setText(v.since, s.health_since ? `for ${duration(nowS() - s.health_since)}` : '');
    v.since.title = s.health_since ? `since ${stamp(s.health_since)}` : '';

    const checked = s.check && s.check !== 'none';
    const latency = s.last_latency_ms !== null && s.last_latency_ms !== undefined ? `${s.last_latency_ms} ms` : '';
    const age = s.last_check ? `${duration(nowS() - s.last_check)} ago` : 'not yet';
    setText(v.checkKind, s.check || '–');
    setText(v.checkMeta, checked ? [latency, age].filter(Boolean).join(' · ') : '');
    v.checkMeta.title = s.last_check ? `last check ${stamp(s.last_check)}` : '';
    const failing = Boolean(s.last_error) && (s.last_check_ok === false || s.health === 'down');
    setText(v.lastError, failing ? s.last_error : '');
    v.lastError.hidden = !failing;

    setText(v.weight, weight === undefined ? '–' : weight);
    // hot spare, and slow start: the share of its weight it has while it ramps up
    v.backup.hidden = !member.backup;
    v.backup.title = 'backup server: new users only while no other server of the pool takes them';
    const ramp = s.slowstart && s.slowstart.share !== null ? s.slowstart : null;
    v.ramp.hidden = !ramp;
    setText(v.ramp, ramp ? `ramping ${Math.round(ramp.share * 100)}%` : '');
    v.ramp.title = ramp ? `slow start: ${Math.round(ramp.share * 100)}% of its weight, ` +
      `full in ${duration(ramp.left_s)} (window ${duration(ramp.window_s)})` : '';
    setText(v.sessions, s.active_sessions);
    // max_sessions: usage against the cap in the column the pool balances on
    const capped = balance === 'leastsessions' ? v.homed : v.connections;
    const usage = balance === 'leastsessions' ? s.homed_users : s.connections;
    setText(v.connections, capped === v.connections && cap !== null ? `${s.connections} / ${cap}` : s.connections);
    setText(v.homed, capped === v.homed && cap !== null ? `${s.homed_users} / ${cap}` : s.homed_users);
    capped.classList.toggle('at-cap', cap !== null && usage >= cap);
    capped.title = cap !== null ? `max_sessions ${cap}: no new users at ${cap}` : '';
    for (const state of STATES) {
      const button = v.buttons[state];
      const current = s.admin_state === state;
      button.classList.toggle('current', current);
      button.setAttribute('aria-pressed', String(current));
      if (!button.dataset.busy) button.disabled = current;
    }
  }

  function setClass(node, className) {
    if (node.className !== className) node.className = className;
  }

  function renderPools(pools, servers) {
    const byName = new Map(servers.map((s) => [s.name, s]));
    const container = $('#pools');
    const keep = new Set(pools.map((p) => p.name));
    for (const [name, view] of poolViews) {
      if (!keep.has(name)) {
        view.root.remove();
        poolViews.delete(name);
      }
    }
    const placeholder = container.querySelector('.empty');
    if (placeholder) placeholder.remove();
    pools.forEach((pool, index) => {
      const view = poolView(pool.name);
      if (container.children[index] !== view.root) container.insertBefore(view.root, container.children[index] || null);
      const members = pool.servers.filter((n) => byName.has(n));
      const up = members.filter((n) => byName.get(n).health !== 'down' && byName.get(n).admin_state !== 'maint');
      setText(view.meta, `${pool.balance} · ${up.length} of ${members.length} can take users`);
      for (const [name, row] of view.rows) {
        if (!members.includes(name)) {
          row.row.remove();
          view.rows.delete(name);
        }
      }
      members.forEach((name, i) => {
        let row = view.rows.get(name);
        if (!row) {
          row = serverRow(pool.name, name);
          view.rows.set(name, row);
        }
        if (view.tbody.children[i] !== row.row) view.tbody.insertBefore(row.row, view.tbody.children[i] || null);
        updateServerRow(row, byName.get(name), pool.name, pool.balance);
      });
    });
    if (!pools.length) container.replaceChildren(el('p', {class: 'empty'}, 'No pool configured.'));
  }

  function renderSummary(servers) {
    const count = (pred) => servers.filter(pred).length;
    const sum = (key) => servers.reduce((total, s) => total + (Number(s[key]) || 0), 0);
    setText($('#sum-up'), `${count((s) => s.health !== 'down')} / ${servers.length}`);
    const down = count((s) => s.health === 'down');
    setText($('#sum-down'), down);
    $('#sum-down').parentElement.classList.toggle('nonzero', down > 0);
    setText($('#sum-drain'), count((s) => s.admin_state === 'drain'));
    setText($('#sum-maint'), count((s) => s.admin_state === 'maint'));
    setText($('#sum-sessions'), sum('active_sessions'));
    setText($('#sum-homed'), sum('homed_users'));
  }

  // -- decisions and events --------------------------------------------------------------------

  let decisionsCache = [];

  function userCell(user) {
    if (user === null || user === undefined) {
      return el('td', {class: 'user'}, el('span', {class: 'nouser', title: 'no mstshash cookie'}, 'no cookie'));
    }
    return el('td', {class: 'user'}, user);
  }

  function routeText(d) {
    if (!d.detail) return d.route || '';
    return !d.route || d.detail.includes(d.route) ? d.detail : `${d.route} — ${d.detail}`;
  }

  function renderDecisions(decisions) {
    decisionsCache = decisions;
    const filter = $('#decisions-filter').value.trim().toLowerCase();
    const shown = decisions.filter((d) => !filter || [d.user, d.server, d.pool, d.reason, d.client, d.route, d.detail]
      .some((v) => v && String(v).toLowerCase().includes(filter))).slice(0, MAX_DECISIONS);
    const table = $('#decisions');
    const signature = JSON.stringify([filter, shown.map((d) => d.session + d.reason + d.at)]);
    if (table.dataset.sig !== signature) {
      table.dataset.sig = signature;
      table.tBodies[0].replaceChildren(...shown.map((d) => el('tr', {data: {session: d.session, reason: d.reason}},
        el('td', {class: 'time', title: stamp(d.at)}, clock(d.at)),
        userCell(d.user),
        el('td', {class: 'client'}, d.client),
        el('td', {class: 'pool'}, d.pool || '–'),
        el('td', {class: 'server'}, d.server || '–'),
        el('td', {class: 'reason-cell'}, reasonPill(d.reason)),
        el('td', {class: 'detail'}, routeText(d)))));
    }
    $('#decisions-empty').hidden = shown.length > 0;
    setText($('#decisions-empty'), filter ? 'No decision matches the filter.' : 'No connection routed yet.');
  }

  function renderEvents(events) {
    const shown = events.slice(0, MAX_EVENTS);
    const table = $('#events');
    const signature = JSON.stringify(shown.map((e) => e.server + e.at));
    if (table.dataset.sig !== signature) {
      table.dataset.sig = signature;
      table.tBodies[0].replaceChildren(...shown.map((e) => el('tr', {data: {eventServer: e.server, eventHealth: e.new}},
        el('td', {class: 'time', title: stamp(e.at)}, clock(e.at)),
        el('td', {class: 'server'}, el('span', {class: 'srv-name'}, e.server)),
        el('td', {class: 'change'}, pill('h', e.old), el('span', {class: 'arrow'}, '→'), pill('h', e.new)),
        el('td', {class: 'detail'}, e.reason,
          e.last_error ? el('span', {class: 'last-error'}, e.last_error) : null))));
    }
    $('#events-empty').hidden = shown.length > 0;
  }

  function renderHosts(data) {
    // the hosts' own session lists ([sessions]); the panel shows only where a source is configured
    $('#hosts-panel').hidden = data.hosts.length === 0;
    const table = $('#hosts');
    const signature = JSON.stringify(data);
    if (table.dataset.sig === signature) return;
    table.dataset.sig = signature;
    table.tBodies[0].replaceChildren(...data.hosts.map((h) => el('tr', {data: {host: h.server, fresh: String(h.fresh)}},
      el('td', {class: 'server'}, el('span', {class: 'srv-name'}, h.server),
        h.deny_new ? el('span', {class: 'last-error'}, 'refuses new logons') : null),
      el('td', {class: 'num'}, String(h.sessions)),
      el('td', {class: 'num'}, `${h.active} / ${h.disconnected}`),
      el('td', {class: h.fresh ? 'num' : 'num stale'}, h.age_s === null ? 'never' : `${Math.round(h.age_s)} s`),
      el('td', {class: 'detail'}, h.last_error || ''))));
    const dup = $('#duplicates');
    dup.hidden = data.duplicates.length === 0;
    setText(dup, data.duplicates.length === 0 ? '' : 'Sessions on several hosts: ' +
      data.duplicates.map((d) => `${d.user} (${d.servers.join(', ')})`).join('; '));
  }

  // -- polling ---------------------------------------------------------------------------------

  let timer = null;
  let inFlight = false;
  let again = false;
  let downSince = null;
  let haveVersion = false;

  async function poll() {
    timer = null;
    if (document.hidden) return;
    inFlight = true;
    try {
      const [servers, pools, decisions, events, config, hosts] = await Promise.all([
        api('/api/v1/servers'), api('/api/v1/pools'), api('/api/v1/decisions'), api('/api/v1/events'),
        api('/api/v1/config'), api('/api/v1/hosts')]);
      renderHosts(hosts);
      renderSummary(servers.servers);
      renderPools(pools.pools, servers.servers);
      renderDecisions(decisions.decisions);
      renderEvents(events.events);
      renderConfig(config);
      connected();
      if (!haveVersion) {
        haveVersion = true;
        loadVersion().then((ok) => { haveVersion = ok; });
      }
    } catch (err) {
      disconnected(err);
    } finally {
      inFlight = false;
    }
    if (again) {
      again = false;
      pollNow();
    } else {
      schedule();
    }
  }

  function schedule() {
    if (timer === null && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function pollNow() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (inFlight) again = true;
    else poll();
  }

  function connected() {
    downSince = null;
    $('#banner').hidden = true;
    $('#main').classList.remove('stale');
    setLive('live', `live · ${new Date().toLocaleTimeString([], {hour12: false})}`);
    setText($('#updated'), `updated ${new Date().toLocaleTimeString([], {hour12: false})}`);
  }

  function disconnected(err) {
    const banner = $('#banner');
    if (!(err instanceof ApiError)) {
      console.error(err); // a bug in this page: say so rather than pretend the API is down
      banner.dataset.kind = 'error';
      setText(banner, `Dashboard error: ${err}`);
      banner.hidden = false;
      return;
    }
    if (err.status === 401 || err.status === 403) {
      banner.dataset.kind = 'auth';
      setText(banner, `The admin API refuses reads (${err.status}: ${err.message}). ` +
        'It is configured with read_auth = true: enter the admin token above.');
      setLive('down', 'token needed');
    } else {
      downSince = downSince || new Date();
      banner.dataset.kind = 'disconnected';
      setText(banner, `Disconnected: ${err.message} (since ${downSince.toLocaleTimeString([], {hour12: false})}); ` +
        'retrying every second. The data below is stale.');
      setLive('down', 'disconnected');
    }
    banner.hidden = false;
    $('#main').classList.add('stale');
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      setLive('paused', 'paused (tab hidden)');
    } else {
      pollNow();
    }
  });

  // -- admin actions -----------------------------------------------------------------------------

  let statusTimer = null;

  function showStatus(kind, text) {
    const box = $('#action-status');
    box.dataset.kind = kind;
    setText($('#action-text'), text);
    box.hidden = false;
    clearTimeout(statusTimer);
    if (kind === 'ok') statusTimer = setTimeout(() => { box.hidden = true; }, 6000); // errors stay until dismissed
  }

  function explainRefusal(err, what) {
    if (err.status === 401) {
      return token()
        ? `${what} refused: the admin token was not accepted (401: ${err.message}).`
        : `${what} refused: enter the admin token first (401: ${err.message}).`;
    }
    if (err.status === 403) return `${what} refused: the API is read-only (403: ${err.message}).`;
    if (err.status === 0) return `${what} failed: ${err.message}.`;
    return `${what} failed (${err.status}: ${err.message}).`;
  }

  async function setState(button) {
    const server = button.dataset.server;
    const state = button.dataset.action;
    const what = `Setting ${server} to ${state}`;
    const buttons = document.querySelectorAll('button[data-action][data-server]');
    const mine = [...buttons].filter((b) => b.dataset.server === server);
    mine.forEach((b) => { b.dataset.busy = '1'; b.disabled = true; });
    try {
      const result = await api(`/api/v1/servers/${encodeURIComponent(server)}/state`, {method: 'POST', body: {state}});
      showStatus('ok', `${server} is now ${result.admin_state}.`);
    } catch (err) {
      showStatus('error', err instanceof ApiError ? explainRefusal(err, what) : `${what} failed: ${err}`);
    } finally {
      mine.forEach((b) => { delete b.dataset.busy; b.disabled = false; });
      pollNow();
    }
  }

  // -- user lookup ---------------------------------------------------------------------------------

  function renderExplain(x) {
    const d = x.decision;
    const refused = !d.servers || !d.servers.length;
    const nowhere = d.reason === 'denied' ? 'refused' : 'no server can take them';
    const verdict = el('div', {class: 'verdict', id: 'lookup-verdict'},
      el('span', {class: 'user'}, x.user === null ? '(no user)' : x.user),
      el('span', {class: 'arrow'}, '→'),
      refused
        ? el('span', {id: 'lookup-servers', class: 'refused'}, nowhere)
        : el('span', {}, 'pool ', el('b', {id: 'lookup-pool'}, d.pool), el('span', {class: 'arrow'}, '→'),
          el('b', {id: 'lookup-servers'}, d.servers.join(', '))),
      ' ', reasonPill(d.reason));
    verdict.querySelector('.reason').id = 'lookup-reason';
    const facts = [];
    if (d.detail) facts.push(d.detail);
    if (d.moved_from) facts.push(`moved from ${d.moved_from}`);
    if (!refused && d.servers.length > 1) facts.push('servers in order of preference');
    if (x.candidates && x.candidates.length > 1) facts.push(`stands for: ${x.candidates.join(', ')}`);
    facts.push(x.groups && x.groups.length ? `groups: ${x.groups.join(', ')}` : 'in no group');
    const steps = x.steps.length
      ? el('table', {class: 'grid', id: 'lookup-steps'},
        el('thead', {}, el('tr', {}, el('th', {}, 'route'), el('th', {}, 'matched'), el('th', {}, 'why'))),
        el('tbody', {}, ...x.steps.map((s) => el('tr', {class: s.matched ? 'step-hit' : '', data: {matched: s.matched}},
          el('td', {class: 'route'}, s.route),
          el('td', {class: s.matched ? 'matched-yes' : 'matched-no'}, s.matched ? '✓ yes' : '✗ no'),
          el('td', {class: 'why'}, s.why)))))
      : el('p', {class: 'empty', id: 'lookup-steps'}, 'No [[route]] rules: the first pool serves everyone.');
    return [verdict, el('div', {class: 'facts', id: 'lookup-facts'}, facts.join(' · ')), steps];
  }

  async function lookup(event) {
    event.preventDefault();
    const user = $('#lookup-user').value.trim();
    const source = $('#lookup-source').value.trim();
    const box = $('#lookup-result');
    if (!user) {
      box.replaceChildren(el('p', {class: 'error'}, 'Type a user name.'));
      box.hidden = false;
      return;
    }
    const query = new URLSearchParams({user});
    if (source) query.set('source', source);
    box.setAttribute('aria-busy', 'true');
    try {
      box.replaceChildren(...renderExplain(await api(`/api/v1/explain?${query}`)));
      box.dataset.user = user;
    } catch (err) {
      box.replaceChildren(el('p', {class: 'error'}, err instanceof ApiError ? explainRefusal(err, 'Lookup') : String(err)));
    } finally {
      box.removeAttribute('aria-busy');
      box.hidden = false;
    }
  }

  // -- wiring -----------------------------------------------------------------------------------------

  function initToken() {
    const input = $('#token');
    input.value = storedToken();
    const mark = () => input.classList.toggle('has-token', input.value.trim() !== '');
    input.addEventListener('input', () => {
      const value = input.value.trim();
      try {
        if (value) sessionStorage.setItem(TOKEN_KEY, value);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch {
        // storage disabled: api() reads the field directly
      }
      mark();
    });
    $('#token-clear').addEventListener('click', () => {
      input.value = '';
      input.dispatchEvent(new Event('input'));
    });
    $('#token-form').addEventListener('submit', (e) => e.preventDefault());
    mark();
  }

  function init() {
    initToken();
    $('#pools').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action][data-server]');
      if (button && !button.disabled) setState(button);
    });
    $('#lookup-form').addEventListener('submit', lookup);
    $('#decisions-filter').addEventListener('input', () => renderDecisions(decisionsCache));
    $('#action-dismiss').addEventListener('click', () => { $('#action-status').hidden = true; });
    poll();
  }

  init();
})();
