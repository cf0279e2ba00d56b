// Kuota's live page: log in with the admin token (the server answers with a session cookie),
// then poll this node's figures and the event list, and follow one event's availability live
// over Server-Sent Events. Everything shown is set with textContent: event names are input.
import { TimeChart } from './charts.js';

/** How often the node's figures are read (the server recomputes them at most this often). */
const NODE_POLL_MS = 1000;
/** How often the event list (and the figures of events followed without a stream) is read. */
const EVENTS_POLL_MS = 5000;
/** Every request of the page gives up after this. */
const FETCH_TIMEOUT_MS = 5000;
/** After the stream was refused or lost, try it again after this. */
const STREAM_RETRY_MS = 5000;

const $ = (id) => document.getElementById(id);

/** Thrown when the session is gone: the page goes back to the login form. */
class LoggedOut extends Error {}

/** The page's running state while logged in; null when logged out. */
let live = null;

async function api(path, { method = 'GET', body } = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
  };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && path !== '/v1/admin/sessions') throw new LoggedOut();
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: response.status, ok: response.ok, json };
}

/** A problem document's detail, or the status. */
function problem(result) {
  const json = result.json || {};
  const fields = (json.errors || []).map((error) => `${error.field}: ${error.message}`).join('; ');
  return [json.detail || `HTTP ${result.status}`, fields].filter(Boolean).join(' — ');
}

function setText(id, text) {
  $(id).textContent = text;
}

function formatRate(value) {
  return value >= 100 ? Math.round(value).toLocaleString('en') : value.toFixed(1);
}

function formatMs(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const ms = seconds * 1000;
  return `≤ ${ms < 1 ? ms.toFixed(2) : ms.toLocaleString('en', { maximumFractionDigits: 1 })} ms`;
}

function formatSeconds(seconds) {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function formatCount(count, max) {
  return count >= max ? `≥ ${max.toLocaleString('en')}` : count.toLocaleString('en');
}

function setState(id, state) {
  const element = $(id);
  element.textContent = state.replace('_', ' ');
  element.className = state === 'up' ? 'up' : state === 'down' ? 'down' : 'muted';
}

// ---------------------------------------------------------------------------------------------
// Logging in and out

function showLogin(message = '') {
  stop();
  $('console').hidden = true;
  $('logout').hidden = true;
  $('busy').hidden = true;
  $('login').hidden = false;
  setText('node-name', '');
  setText('login-error', message);
  $('token').focus();
}

async function logIn(event) {
  event.preventDefault();
  setText('login-error', '');
  try {
    const result = await api('/v1/admin/sessions', { method: 'POST', body: { token: $('token').value } });
    if (result.status === 201) {
      $('token').value = '';
      start();
    } else if (result.status === 401) {
      setText('login-error', 'That is not the admin token.');
    } else {
      setText('login-error', problem(result));
    }
  } catch (error) {
    setText('login-error', `The server did not answer (${error.message}).`);
  }
}

async function logOut() {
  stop();
  try {
    await api('/v1/admin/sessions', { method: 'DELETE' });
  } finally {
    showLogin('Logged out.');
  }
}

// ---------------------------------------------------------------------------------------------
// Polling

function start() {
  $('login').hidden = true;
  $('console').hidden = false;
  $('logout').hidden = false;
  live = {
    timers: [],
    stream: null,
    followed: null,
    charts: {
      rates: new TimeChart($('chart-rates'), ['admitted', 'sold out', '429', '503']),
      latency: new TimeChart($('chart-latency'), ['requests', 'commits']),
      backlog: new TimeChart($('chart-backlog'), ['write-behind', 'outbox']),
      availability: null,
    },
  };
  poll(pollNode, NODE_POLL_MS);
  poll(pollEvents, EVENTS_POLL_MS);
}

function stop() {
  if (!live) return;
  live.timers.forEach(clearTimeout);
  closeStream();
  Object.values(live.charts).forEach((chart) => chart && chart.destroy());
  live = null;
}

/** Runs `read` now and again `interval` after each run ends, so slow answers never pile up. */
function poll(read, interval) {
  const session = live;
  const run = async () => {
    if (live !== session) return;
    try {
      await read();
    } catch (error) {
      if (error instanceof LoggedOut) {
        showLogin('The session ended; log in again.');
        return;
      }
      console.warn(error);
    }
    if (live === session) session.timers.push(setTimeout(run, interval));
  };
  run();
}

async function pollNode() {
  let result;
  try {
    result = await api('/v1/admin/dashboard/node');
  } catch (error) {
    if (error instanceof LoggedOut) throw error;
    setText('node-name', `The server did not answer (${error.message}); retrying.`);
    return;
  }
  if (!result.ok) {
    setText('node-name', `Node figures unavailable: ${problem(result)}`);
    return;
  }
  renderNode(result.json);
  chartAvailability();
}

/** Adds the followed event's latest figures to its chart: called once a second. */
function chartAvailability() {
  if (live.charts.availability && live.availability) {
    live.charts.availability.push(Date.now() / 1000, live.availability);
  }
}

function renderNode(node) {
  setText('node-name', `Node ${node.node_id}`);
  const busy = $('busy');
  busy.hidden = !node.busy.busy;
  busy.textContent = node.busy.busy ? `Busy: ${node.busy.reason}` : '';

  setText('admissions-rate', formatRate(node.admissions_per_second));
  setText('refused-sold-out-rate', formatRate(node.refusals_per_second.sold_out));
  setText('refused-429-rate', formatRate(node.refusals_per_second.rate_limited));
  setText('refused-503-rate', formatRate(node.refusals_per_second.overloaded));
  setText('refused-sold-out-total', node.refusals_total.sold_out.toLocaleString('en'));
  setText('refused-429-total', node.refusals_total.rate_limited.toLocaleString('en'));
  setText('refused-503-total', node.refusals_total.overloaded.toLocaleString('en'));
  setText('admissions-total', node.admissions_total.toLocaleString('en'));
  setText('request-p99', formatMs(node.request_p99_seconds));
  setText('write-backlog', node.write_behind.backlog.toLocaleString('en'));
  setText('commit-p99', formatMs(node.write_behind.commit_p99_seconds));
  setState('store-state', node.write_behind.stalled ? 'down' : node.store);
  setState('redis-state', node.redis);
  setText('streams', `${node.stream_subscribers} of ${node.stream_subscribers_max.toLocaleString('en')}`);
  setText('owned-events', node.owned_events.length ? node.owned_events.join(', ') : 'none');

  const outbox = node.outbox;
  setText('outbox-pending', outbox ? formatCount(outbox.pending, outbox.count_max) : 'store did not answer');
  setText('outbox-oldest', outbox ? formatSeconds(outbox.oldest_due_age_seconds) : '–');
  setText('outbox-dead', outbox ? formatCount(outbox.dead, outbox.count_max) : '–');
  const webhooks = node.webhooks;
  setText('webhooks-pending', webhooks ? formatCount(webhooks.pending, webhooks.count_max) : 'store did not answer');
  setText('webhooks-oldest', webhooks ? formatSeconds(webhooks.oldest_due_age_seconds) : '–');
  setText('webhooks-dead', webhooks ? formatCount(webhooks.dead, webhooks.count_max) : '–');

  // The first view of a process has no interval, hence no rates yet.
  if (node.interval_seconds > 0) {
    const at = node.at_ms / 1000;
    const rates = node.refusals_per_second;
    live.charts.rates.push(at, [node.admissions_per_second, rates.sold_out, rates.rate_limited, rates.overloaded]);
    const ms = (seconds) => (seconds === null ? null : seconds * 1000);
    live.charts.latency.push(at, [ms(node.request_p99_seconds), ms(node.write_behind.commit_p99_seconds)]);
    live.charts.backlog.push(at, [node.write_behind.backlog, outbox ? outbox.pending : null]);
  }
}

// ---------------------------------------------------------------------------------------------
// Events

async function pollEvents() {
  const result = await api('/v1/admin/dashboard/events');
  if (!result.ok) return;
  renderEvents(result.json.items);
  renderQueues(result.json.items);
  // Without its stream, the followed event's figures come from here.
  if (live && live.followed && !live.stream) {
    const followed = result.json.items.find((item) => item.id === live.followed);
    if (followed && followed.here) renderLive(followed.here);
  }
}

function renderEvents(items) {
  const body = $('events').tBodies[0];
  const rows = items.map((item) => {
    const row = document.createElement('tr');
    row.dataset.event = item.id;
    if (live && live.followed === item.id) row.className = 'selected';
    const name = document.createElement('td');
    name.textContent = `${item.name} (${item.id})`;
    const status = document.createElement('td');
    const seats = document.createElement('td');
    if (item.here) {
      status.textContent = item.here.status.replace('_', ' ');
      seats.textContent = item.here.categories.map((c) => `${c.code}: ${c.available} of ${c.capacity}`).join(', ');
    } else {
      status.textContent = 'not running here';
      seats.textContent = 'follow it to read its figures';
      seats.className = 'muted';
    }
    const action = document.createElement('td');
    const follow = document.createElement('button');
    follow.type = 'button';
    follow.className = 'secondary';
    follow.textContent = 'Follow live';
    follow.setAttribute('aria-label', `Follow ${item.name} live`);
    follow.addEventListener('click', () => followEvent(item.id));
    action.append(follow);
    row.append(name, status, seats, action);
    return row;
  });
  body.replaceChildren(...rows);
}

/**
 * Extension point: events with a fair opening carry `queue` in their figures (docs/api.md,
 * "Queue"); this server's events may not, and then the panel keeps its text.
 */
function renderQueues(items) {
  const queued = items.filter((item) => item.here && item.here.queue);
  if (!queued.length) return;
  const table = document.createElement('table');
  const head = table.createTHead().insertRow();
  for (const title of ['Event', 'Waiting', 'Passes outstanding', 'Admitted / s']) {
    const cell = document.createElement('th');
    cell.scope = 'col';
    cell.textContent = title;
    head.append(cell);
  }
  const body = table.createTBody();
  for (const item of queued) {
    const queue = item.here.queue;
    const row = body.insertRow();
    const figures = [item.id, queue.waiting, queue.admitted_outstanding, queue.admission_rate];
    for (const figure of figures) row.insertCell().textContent = figure ?? '–';
  }
  $('queue').replaceChildren(table);
}

/** One stream per page: following an event closes the stream of the one followed before. */
function followEvent(id) {
  if (!live) return;
  closeStream();
  live.followed = id;
  live.availability = null;
  if (live.charts.availability) live.charts.availability.destroy();
  live.charts.availability = null;
  $('live').hidden = false;
  setText('live-name', id);
  const categories = $('live-categories').tBodies[0];
  categories.replaceChildren();
  delete categories.dataset.codes;
  setText('capacity-result', '');
  for (const row of $('events').tBodies[0].rows) {
    row.className = row.dataset.event === id ? 'selected' : '';
  }
  openStream(id);
}

function openStream(id) {
  const session = live;
  const stream = new EventSource(`/v1/events/${encodeURIComponent(id)}/stream`);
  live.stream = stream;
  setText('live-state', 'Connecting…');
  stream.addEventListener('availability', (message) => {
    setText('live-state', 'Live.');
    renderLive(JSON.parse(message.data));
  });
  stream.addEventListener('error', () => {
    // A refusal (the server's cap of streams, 503) or an unknown event closes the stream for
    // good; a lost connection is retried by the browser, and shows here meanwhile.
    if (stream.readyState !== EventSource.CLOSED) {
      setText('live-state', 'Connection lost; reconnecting…');
      return;
    }
    if (live !== session || session.stream !== stream) return;
    session.stream = null;
    setText('live-state', 'The live stream was refused or ended; figures refresh every few seconds meanwhile.');
    session.timers.push(
      setTimeout(() => {
        if (live === session && session.followed === id && !session.stream) openStream(id);
      }, STREAM_RETRY_MS),
    );
  });
}

function closeStream() {
  if (live && live.stream) {
    live.stream.close();
    live.stream = null;
  }
}

function renderLive(view) {
  // The stream's figures name the event `event_id`; the list's, `id`.
  if (!live || (view.event_id ?? view.id) !== live.followed) return;
  const body = $('live-categories').tBodies[0];
  const codes = view.categories.map((category) => category.code).join('\n');
  if (body.dataset.codes !== codes) {
    body.dataset.codes = codes;
    body.replaceChildren(...view.categories.map(categoryRow));
  }
  for (const category of view.categories) {
    const row = body.querySelector(`tr[data-category="${CSS.escape(category.code)}"]`);
    for (const figure of ['available', 'capacity', 'confirmed', 'held', 'waitlisted']) {
      row.querySelector(`.${figure}`).textContent = category[figure].toLocaleString('en');
    }
  }
  if (!live.charts.availability) {
    live.charts.availability = new TimeChart(
      $('chart-availability'),
      view.categories.map((category) => category.code),
    );
  }
  // The stream sends up to four updates a second and none while nothing changes: the chart
  // takes the latest figures once a second instead (`chartAvailability`).
  live.availability = view.categories.map((category) => category.available);
}

function categoryRow(category) {
  const row = document.createElement('tr');
  row.dataset.category = category.code;
  const name = document.createElement('th');
  name.scope = 'row';
  name.textContent = `${category.name} (${category.code})`;
  row.append(name);
  for (const figure of ['available', 'capacity', 'confirmed', 'held', 'waitlisted']) {
    const cell = document.createElement('td');
    cell.className = `number ${figure}`;
    row.append(cell);
  }
  const change = document.createElement('td');
  const form = document.createElement('form');
  const input = document.createElement('input');
  input.type = 'number';
  input.min = '0';
  input.max = '10000000';
  input.required = true;
  input.value = String(category.capacity);
  input.setAttribute('aria-label', `New capacity of ${category.name}`);
  const submit = document.createElement('button');
  submit.type = 'submit';
  submit.textContent = 'Set';
  form.append(input, submit);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    changeCapacity(category.code, Number(input.value));
  });
  change.append(form);
  row.append(change);
  return row;
}

async function changeCapacity(code, capacity) {
  const id = live.followed;
  const path = `/v1/events/${encodeURIComponent(id)}/categories/${encodeURIComponent(code)}`;
  try {
    const result = await api(path, { method: 'PATCH', body: { capacity } });
    setText('capacity-result', result.ok ? `${code}: capacity set to ${capacity}.` : problem(result));
  } catch (error) {
    if (error instanceof LoggedOut) return showLogin('The session ended; log in again.');
    setText('capacity-result', `The server did not answer (${error.message}).`);
  }
}

async function createEvent(event) {
  event.preventDefault();
  const categories = $('new-categories')
    .value.split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [code = '', name = '', capacity = ''] = line.split(',').map((part) => part.trim());
      return { code, name, capacity: Number(capacity) };
    });
  const body = {
    name: $('new-name').value,
    hold_ttl_seconds: Number($('new-hold').value || 0),
    categories,
  };
  if ($('new-id').value.trim()) body.id = $('new-id').value.trim();
  try {
    const result = await api('/v1/events', { method: 'POST', body });
    if (result.status === 201) {
      setText('create-result', `Created ${result.json.id}.`);
      $('create-form').reset();
      await pollEvents();
      followEvent(result.json.id);
    } else {
      setText('create-result', problem(result));
    }
  } catch (error) {
    if (error instanceof LoggedOut) return showLogin('The session ended; log in again.');
    setText('create-result', `The server did not answer (${error.message}).`);
  }
}

// ---------------------------------------------------------------------------------------------

$('login-form').addEventListener('submit', logIn);
$('logout').addEventListener('click', logOut);
$('create-form').addEventListener('submit', createEvent);
// Leaving the page frees its stream; a page restored from the back-forward cache starts anew.
window.addEventListener('pagehide', stop);
window.addEventListener('pageshow', (event) => event.persisted && window.location.reload());

// A page opened with a live session goes straight to the figures.
api('/v1/admin/dashboard/node')
  .then((result) => (result.ok ? start() : showLogin()))
  .catch(() => showLogin());
