// jatah status page: renders GET /api/v1/status (an OPD) or
// GET /api/v1/status/overview (/status/admin) and polls it every few
// seconds. A token comes from the link's fragment (#token=...), which the
// browser never sends in a request line, and goes out as a bearer token.
'use strict';

(function () {
  const POLL_MS = 2500;
  const TIMEOUT_MS = 6000;
  const SVG = 'http://www.w3.org/2000/svg';

  const T = {
    id: {
      brand: 'Status jaringan OPD',
      brandAdmin: 'Semua OPD',
      toggle: 'English',
      toggleLang: 'en',
      loading: 'Memuat…',
      byAddress: (a) => `Dikenali dari alamat komputer Anda (${a}).`,
      byToken: 'Dibuka dengan tautan token OPD ini.',
      light: { green: 'hijau', yellow: 'kuning', red: 'merah', grey: 'abu-abu' },
      lightLabel: (c, s) => `Lampu ${c}: ${s}`,
      states: {
        healthy: 'Normal',
        idle: 'Normal, sedang sepi',
        saturated: 'Jatah penuh',
        local_fault: 'Gangguan di kantor Anda',
        local_degraded: 'Jaringan kantor Anda lambat',
        upstream_degraded: 'Internet melambat (bukan di kantor Anda)',
        upstream_down: 'Internet terputus (bukan di kantor Anda)',
        none: 'Menunggu data',
      },
      statesAdmin: {
        local_fault: 'Gangguan di kantor OPD',
        local_degraded: 'Jaringan kantor OPD lambat',
        upstream_degraded: 'Internet melambat',
        upstream_down: 'Internet terputus',
      },
      unreachable: 'Tidak terhubung ke gateway',
      since: (t) => `Sejak ${t}.`,
      refLabel: 'Kode referensi',
      refHelp: 'Sebutkan kode ini bila menghubungi Diskominfo.',
      todo: 'Apa yang perlu dilakukan',
      evidence: 'Bukti teknis (untuk Diskominfo)',
      now: 'Kecepatan sekarang',
      download: 'Unduh',
      upload: 'Unggah',
      allocation: (g, c) => `jatah: dijamin ${g}, paling tinggi ${c}`,
      volume: 'Pemakaian',
      today: 'Hari ini',
      month: 'Bulan ini',
      noHistory: 'Riwayat pemakaian sedang tidak tersedia.',
      chart: '24 jam terakhir',
      chartDesc: (d, u) => `Pemakaian per jam selama 24 jam terakhir: total unduh ${d}, unggah ${u}.`,
      perHour: 'per jam',
      events: 'Kejadian terakhir',
      noEvents: 'Tidak ada perubahan status dalam 24 jam terakhir.',
      hostsTitle: 'Pemakai terbesar (5 menit terakhir)',
      hostsWait: 'Data pemakaian per perangkat tersedia beberapa menit setelah jatah mulai.',
      hostsNone: 'Tidak ada pemakaian dalam 5 menit terakhir.',
      hostCols: ['Perangkat', 'Unduh', 'Unggah'],
      hostsActive: (n) => `${n} perangkat aktif.`,
      dirWord: { download: 'unduhan', upload: 'unggahan' },
      topHostStep: (who, pct, dir) => ['Pemakai terbesar', `: ${who} memakai ${pct}% dari ${dir} kantor dalam 5 menit terakhir.`],
      you: 'Kantor Anda',
      network: 'Jaringan Diskominfo',
      updated: (t) => `Diperbarui ${t}; halaman ini memperbarui diri setiap beberapa detik.`,
      offline: (t) => `Halaman ini tidak dapat menghubungi gateway Diskominfo sejak ${t}.`,
      offlineSentence: (t) =>
        `Halaman ini tidak dapat menghubungi gateway Diskominfo sejak ${t}. Jika Anda membukanya dari jaringan kantor, ` +
        'sambungan kantor Anda ke Diskominfo mungkin terputus: periksa kabel daya dan konektor router.',
      stale: 'Kecepatan dan pemakaian di bawah adalah data terakhir yang diterima.',
      unknownTitle: 'Alamat Anda bukan jaringan OPD',
      unknownBody: (a) =>
        `Halaman status menampilkan OPD dari alamat komputer yang membukanya, dan alamat ${a} tidak termasuk jaringan OPD mana pun.`,
      unknownHow:
        'Buka halaman ini dari komputer di jaringan kantor Anda, atau minta tautan status OPD Anda (dengan token) kepada Diskominfo. ' +
        'Tautan itu berbentuk …/status#token=… dan bisa dibuka dari mana saja, juga dari ponsel dengan data seluler.',
      badTokenTitle: 'Tautan ini tidak berlaku',
      badTokenBody: 'Token pada tautan ini tidak dikenal atau sudah dicabut. Minta tautan baru kepada Diskominfo.',
      notFoundTitle: 'OPD tidak ditemukan',
      errorTitle: 'Terjadi kesalahan',
      gatewayTitle: 'Koneksi Internet (uplink)',
      scaled: (c) => `Penyedia layanan mengirim kurang dari kontrak: jatah membagi ${rate(c.effective_bps)} dari ${rate(c.contract_bps)} (${c.direction === 'download' ? 'unduh' : 'unggah'}) ke semua kantor, jaminan setiap kantor disesuaikan menjadi ${c.percent}%.`,
      openPage: (n) => `Buka halaman ${n}`,
      lookupTitle: 'Cari kode referensi',
      lookupLabel: 'Kode referensi dari operator OPD',
      lookupButton: 'Cari',
      lookupNone: 'Tidak ada kejadian dengan kode ini.',
      lookupCurrent: 'masih berlangsung',
      lookupPast: 'sudah berakhir',
      adminNeedsToken: 'Halaman ini memerlukan token admin: /status/admin#token=…',
      steps: {
        normal: [
          ['Tidak ada yang perlu dilakukan', ': jaringan kantor Anda dan jaringan Diskominfo normal.'],
          ['Satu komputer saja bermasalah?', ' Periksa kabel jaringan atau Wi-Fi komputer itu.'],
        ],
        starting: [['Tunggu beberapa detik', ': halaman ini diperbarui sendiri.']],
        offline: [
          ['Kabel daya', ': pastikan kabel daya router tercolok kuat di router dan stopkontak, dan lampu daya (power) menyala.'],
          ['Konektor', ': cabut lalu pasang kembali kabel jaringan di router dan di komputer ini sampai terdengar klik.'],
          ['Lampu router', ': lampu power dan lampu WAN/Internet harus menyala atau berkedip. Jika mati atau merah, matikan router, tunggu 30 detik, lalu nyalakan lagi.'],
          ['Lihat diagnosis Diskominfo', ': buka tautan token OPD Anda dari ponsel dengan data seluler. Jika tidak bisa juga, hubungi helpdesk Diskominfo dan sebutkan kode referensi terakhir {ref}.'],
        ],
        local_fault: [
          ['Kabel daya', ': pastikan kabel daya router tercolok kuat di router dan stopkontak, dan lampu daya (power) menyala.'],
          ['Konektor', ': cabut lalu pasang kembali kabel jaringan (LAN/WAN atau fiber) di router sampai terdengar klik; pastikan kabel tidak tertekuk atau putus.'],
          ['Lampu router', ': lampu power dan lampu WAN/Internet harus menyala atau berkedip. Jika mati atau merah, matikan router, tunggu 30 detik, lalu nyalakan lagi.'],
          ['Masih merah setelah 10 menit?', ' Hubungi helpdesk Diskominfo dan sebutkan kode referensi {ref}, sejak kapan ({since}), dan lampu mana yang menyala di router.'],
        ],
        local_degraded: [
          ['Lampu router', ': periksa lampu WAN dan LAN; lampu yang mati atau berkedip tidak wajar menandakan kabel bermasalah.'],
          ['Konektor dan kabel', ': pasang kembali konektor yang longgar, ganti kabel yang rusak, dan pastikan tidak ada kabel yang tersambung melingkar (loop) di switch.'],
          ['Nyalakan ulang', ': matikan router dan switch kantor 30 detik, lalu nyalakan lagi.'],
          ['Masih lambat?', ' Hubungi helpdesk Diskominfo dan sebutkan kode referensi {ref}.'],
        ],
        saturated: [
          ['Jaringan normal', ': jatah bandwidth kantor Anda terpakai penuh oleh pemakaian di kantor sendiri.'],
          ['Cari pemakaian besar', ': unduhan, pembaruan sistem, video streaming, atau sinkronisasi cloud; tunda yang tidak mendesak.'],
          ['Butuh lebih?', ' Ajukan penambahan jatah ke Diskominfo dengan kode referensi {ref}.'],
        ],
        upstream: [
          ['Tidak ada yang perlu diperbaiki di kantor Anda', ': gangguan ada pada koneksi Internet dari penyedia layanan.'],
          ['Diskominfo sudah menangani', '; tidak perlu menelepon. Jika ditanya, sebutkan kode referensi {ref}.'],
          ['Jangan mematikan router kantor', ': itu tidak membantu.'],
        ],
      },
    },
    en: {
      brand: 'OPD network status',
      brandAdmin: 'All OPDs',
      toggle: 'Bahasa Indonesia',
      toggleLang: 'id',
      loading: 'Loading…',
      byAddress: (a) => `Recognised by your computer's address (${a}).`,
      byToken: "Opened with this OPD's token link.",
      light: { green: 'green', yellow: 'yellow', red: 'red', grey: 'grey' },
      lightLabel: (c, s) => `Light ${c}: ${s}`,
      states: {
        healthy: 'Normal',
        idle: 'Normal, quiet',
        saturated: 'Allocation full',
        local_fault: 'Fault at your office',
        local_degraded: 'Your office network is slow',
        upstream_degraded: 'Internet slow (not your office)',
        upstream_down: 'Internet down (not your office)',
        none: 'Gathering data',
      },
      statesAdmin: {
        local_fault: 'Fault at the OPD',
        local_degraded: "The OPD's network is slow",
        upstream_degraded: 'Internet slow',
        upstream_down: 'Internet down',
      },
      unreachable: 'Not connected to the gateway',
      since: (t) => `Since ${t}.`,
      refLabel: 'Reference code',
      refHelp: 'Quote this code when you call Diskominfo.',
      todo: 'What to do',
      evidence: 'Technical evidence (for Diskominfo)',
      now: 'Current speed',
      download: 'Download',
      upload: 'Upload',
      allocation: (g, c) => `allocation: ${g} guaranteed, at most ${c}`,
      volume: 'Usage',
      today: 'Today',
      month: 'This month',
      noHistory: 'Usage history is unavailable right now.',
      chart: 'Last 24 hours',
      chartDesc: (d, u) => `Hourly usage over the last 24 hours: ${d} downloaded, ${u} uploaded.`,
      perHour: 'per hour',
      events: 'Recent events',
      noEvents: 'No change of state in the last 24 hours.',
      hostsTitle: 'Top users (last 5 minutes)',
      hostsWait: 'Per-device figures appear a few minutes after jatah starts.',
      hostsNone: 'No use in the last 5 minutes.',
      hostCols: ['Device', 'Download', 'Upload'],
      hostsActive: (n) => `${n} active device${n === 1 ? '' : 's'}.`,
      dirWord: { download: 'download', upload: 'upload' },
      topHostStep: (who, pct, dir) => ['Top user', `: ${who}: ${pct}% of the office's ${dir} in the last 5 minutes.`],
      you: 'Your office',
      network: "Diskominfo's network",
      updated: (t) => `Updated ${t}; this page refreshes itself every few seconds.`,
      offline: (t) => `This page cannot reach Diskominfo's gateway since ${t}.`,
      offlineSentence: (t) =>
        `This page cannot reach Diskominfo's gateway since ${t}. If you opened it from the office network, ` +
        "your office's connection to Diskominfo may be cut: check the router's power cable and connector.",
      stale: 'The speeds and usage below are the last received.',
      unknownTitle: "Your address is not an OPD's network",
      unknownBody: (a) =>
        `The status page shows the OPD of the computer that opens it, and the address ${a} belongs to no OPD's network.`,
      unknownHow:
        "Open this page from a computer on your office network, or ask Diskominfo for your OPD's status link (with a token). " +
        'That link looks like …/status#token=… and opens from anywhere, also from a phone on mobile data.',
      badTokenTitle: 'This link is not valid',
      badTokenBody: "The token in this link is unknown or revoked. Ask Diskominfo for a new link.",
      notFoundTitle: 'OPD not found',
      errorTitle: 'Something went wrong',
      gatewayTitle: 'Internet connection (uplink)',
      scaled: (c) => `The ISP delivers less than the contract: jatah shares ${rate(c.effective_bps)} of ${rate(c.contract_bps)} ${c.direction} among the offices, every guarantee scaled to ${c.percent}%.`,
      openPage: (n) => `Open the page of ${n}`,
      lookupTitle: 'Look up a reference code',
      lookupLabel: 'Reference code from the OPD operator',
      lookupButton: 'Look up',
      lookupNone: 'No event has this code.',
      lookupCurrent: 'still in force',
      lookupPast: 'over',
      adminNeedsToken: 'This page needs an admin token: /status/admin#token=…',
      steps: {
        normal: [
          ['Nothing to do', ": your office's network and Diskominfo's network are normal."],
          ['Only one computer has trouble?', " Check that computer's network cable or Wi-Fi."],
        ],
        starting: [['Wait a few seconds', ': this page updates itself.']],
        offline: [
          ['Power cable', ": make sure the router's power cable sits firmly in the router and the socket, and the power light is on."],
          ['Connector', ': unplug and plug back the network cable at the router and at this computer until it clicks.'],
          ['Router lights', ': the power and WAN/Internet lights should be on or blinking. If they are off or red, switch the router off, wait 30 seconds, and switch it on again.'],
          ["See Diskominfo's diagnosis", ": open your OPD's token link from a phone on mobile data. If that fails too, call Diskominfo's helpdesk and give the last reference code {ref}."],
        ],
        local_fault: [
          ['Power cable', ": make sure the router's power cable sits firmly in the router and the socket, and the power light is on."],
          ['Connector', ': unplug and plug back the network cable (LAN/WAN or fibre) at the router until it clicks; check the cable is not bent or cut.'],
          ['Router lights', ': the power and WAN/Internet lights should be on or blinking. If they are off or red, switch the router off, wait 30 seconds, and switch it on again.'],
          ['Still red after 10 minutes?', " Call Diskominfo's helpdesk and give the reference code {ref}, since when ({since}), and which lights are on at the router."],
        ],
        local_degraded: [
          ['Router lights', ': check the WAN and LAN lights; a light that is off or blinks oddly points to a bad cable.'],
          ['Connectors and cables', ': reseat loose connectors, replace damaged cables, and make sure no cable loops back into the switch.'],
          ['Restart', ': switch the office router and switch off for 30 seconds, then on again.'],
          ['Still slow?', " Call Diskominfo's helpdesk and give the reference code {ref}."],
        ],
        saturated: [
          ['The network is fine', ": your office's own use fills its allocation."],
          ['Find the heavy use', ': downloads, system updates, video streaming or cloud sync; postpone what can wait.'],
          ['Need more?', ' Ask Diskominfo for a larger allocation, quoting the reference code {ref}.'],
        ],
        upstream: [
          ['Nothing to fix at your office', ": the fault is in the Internet provider's connection."],
          ['Diskominfo is on it', '; no need to call. If asked, give the reference code {ref}.'],
          ["Do not switch the office router off", ': it does not help.'],
        ],
      },
    },
  };

  const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
  const query = new URLSearchParams(location.search);
  // The token leaves the address bar once read (out of screenshots, shared
  // screens and the history); this tab keeps it, for this address, to
  // reload the page or come back to it. Opening an address anew without a
  // token is a visit without one.
  let token = frag.get('token');
  try {
    const key = `jatah-token:${location.pathname}${location.search}`;
    const nav = (performance.getEntriesByType('navigation')[0] || {}).type;
    if (token) {
      sessionStorage.setItem(key, token);
    } else if (nav === 'reload' || nav === 'back_forward') {
      token = sessionStorage.getItem(key);
    } else {
      sessionStorage.removeItem(key);
    }
  } catch (e) {
    /* storage may be off; the token lives in this page only then */
  }
  if (frag.has('token')) {
    frag.delete('token');
    const rest = frag.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
  const wantedOpd = query.get('opd');
  const admin = location.pathname.replace(/\/+$/, '') === '/status/admin';
  let lang = 'id';
  try {
    lang = localStorage.getItem('jatah-lang') === 'en' ? 'en' : 'id';
  } catch (e) {
    /* storage may be off; Indonesian then */
  }
  if (frag.get('lang') === 'en' || frag.get('lang') === 'id') lang = frag.get('lang');

  let last = null; // last good answer
  let lastAt = null; // when it came
  let failingSince = null;
  let failures = 0; // polls failed in a row
  let lastProblem = null; // last refusal, shown instead of data
  let shownVerdictKey = null;

  const t = () => T[lang];

  function h(tag, attrs, ...kids) {
    const svg = ['svg', 'rect', 'line', 'text', 'title', 'desc', 'g', 'defs', 'pattern', 'path'].includes(tag);
    const el = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const $ = (id) => document.getElementById(id);

  function locale() {
    return lang === 'id' ? 'id-ID' : 'en-GB';
  }

  function num(x, digits) {
    return new Intl.NumberFormat(locale(), { maximumFractionDigits: digits, minimumFractionDigits: 0 }).format(x);
  }

  function mbit(bps) {
    const m = (bps || 0) / 1e6;
    return num(m, m < 10 ? 1 : 0);
  }

  function rate(bps) {
    return `${mbit(bps)} Mbit/s`;
  }

  function bytes(b) {
    if (b === null || b === undefined) return '–';
    if (b >= 1e9) return `${num(b / 1e9, 2)} GB`;
    if (b >= 1e6) return `${num(b / 1e6, 1)} MB`;
    return `${num(b / 1e3, 0)} kB`;
  }

  // Hours and minutes in the gateway's timezone, written 10:02 in both
  // languages (as the server's sentences write them).
  function clock(iso, tz, abbr, withSeconds) {
    const d = new Date(iso);
    let parts;
    try {
      parts = new Intl.DateTimeFormat('en-GB', {
        hour: '2-digit', minute: '2-digit', second: withSeconds ? '2-digit' : undefined,
        hourCycle: 'h23', timeZone: tz,
      }).formatToParts(d);
    } catch (e) {
      parts = new Intl.DateTimeFormat('en-GB', {
        hour: '2-digit', minute: '2-digit', second: withSeconds ? '2-digit' : undefined, hourCycle: 'h23',
      }).formatToParts(d);
      abbr = '';
    }
    const get = (type) => (parts.find((p) => p.type === type) || {}).value;
    const hm = [get('hour'), get('minute')].concat(withSeconds ? [get('second')] : []).join(':');
    return abbr ? `${hm} ${abbr}` : hm;
  }

  function hourOf(iso, tz) {
    try {
      return new Intl.DateTimeFormat('en-GB', { hour: '2-digit', hourCycle: 'h23', timeZone: tz }).format(new Date(iso));
    } catch (e) {
      return String(new Date(iso).getHours()).padStart(2, '0');
    }
  }

  function stateName(state) {
    if (state === 'unreachable') return t().unreachable;
    if (admin && t().statesAdmin[state]) return t().statesAdmin[state];
    return t().states[state || 'none'] || state;
  }

  const SYMBOL = { green: '✓', yellow: '!', red: '✕', grey: '?' };

  function trafficLight(light, state, small) {
    const label = t().lightLabel(t().light[light], stateName(state));
    return h(
      'div',
      { class: `light${small ? ' small-light' : ''}`, role: 'img', 'aria-label': label, 'data-light': light, id: small ? null : 'light' },
      ['red', 'yellow', 'green'].map((c) =>
        h('span', { class: `lamp ${c}${light === c || (light === 'grey' && c === 'yellow') ? ' on' : ''}${light === 'grey' && c === 'yellow' ? ' grey' : ''}` },
          light === c || (light === 'grey' && c === 'yellow') ? SYMBOL[light] : '')
      )
    );
  }

  function badge(light, state, id) {
    return h('span', { class: `badge ${light}`, id }, `${SYMBOL[light]} ${stateName(state)}`);
  }

  function setChrome() {
    document.documentElement.lang = lang;
    const btn = $('lang');
    btn.textContent = t().toggle;
    btn.setAttribute('lang', t().toggleLang);
    $('brand-sub').textContent = admin ? t().brandAdmin : t().brand;
    document.title = `${admin ? t().brandAdmin : t().brand} · jatah`;
  }

  async function call(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const res = await fetch(path, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        signal: ctl.signal,
        cache: 'no-store',
      });
      let body = null;
      try {
        body = await res.json();
      } catch (e) {
        body = null;
      }
      return { ok: res.ok, status: res.status, body };
    } finally {
      clearTimeout(timer);
    }
  }

  function showMessage(title, ...paragraphs) {
    const main = $('main');
    main.className = '';
    main.replaceChildren(
      h('section', { class: 'card', 'aria-labelledby': 'msg-title' },
        h('h1', { id: 'msg-title' }, title),
        paragraphs.map((p) => h('p', {}, p)))
    );
  }

  function showProblem(r) {
    const b = r.body || {};
    const type = b.type || '';
    if (type.endsWith('/unknown-visitor')) {
      const addr = (b.detail || '').match(/address (\S+) is/);
      showMessage(t().unknownTitle, t().unknownBody(addr ? addr[1] : '?'), t().unknownHow);
    } else if (r.status === 401) {
      showMessage(t().badTokenTitle, t().badTokenBody);
    } else if (r.status === 404) {
      showMessage(t().notFoundTitle, b.detail || '');
    } else {
      showMessage(t().errorTitle, b.detail || `HTTP ${r.status}`);
    }
  }

  function setOffline(on) {
    const box = $('offline');
    if (!on) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const tz = last && last.timezone;
    const abbr = last && last.timezone_abbreviation;
    const since = clock(failingSince.toISOString(), tz, abbr, false);
    box.replaceChildren(h('p', { id: 'offline-text' }, t().offline(since), last && !admin ? ` ${t().stale}` : ''));
    box.hidden = false;
  }

  function setUpdated() {
    if (!last || !lastAt) return;
    $('updated').textContent = t().updated(clock(lastAt.toISOString(), last.timezone, last.timezone_abbreviation, true));
  }

  // ---- one OPD ----

  function skeleton() {
    const main = $('main');
    if (main.dataset.view === 'opd') return;
    main.dataset.view = 'opd';
    main.className = 'opd';
    main.replaceChildren(
      h('section', { class: 'card wide', id: 'head', 'aria-labelledby': 'opd-name' }),
      h('section', { class: 'card', id: 'verdict-card', 'aria-live': 'polite', 'aria-labelledby': 'verdict-title' }),
      h('section', { class: 'card', id: 'todo', 'aria-labelledby': 'todo-title' }),
      h('section', { class: 'card', id: 'rates', 'aria-labelledby': 'rates-title' }),
      h('section', { class: 'card', id: 'volume', 'aria-labelledby': 'volume-title' }),
      h('section', { class: 'card', id: 'chart-card', 'aria-labelledby': 'chart-title-h' }),
      h('section', { class: 'card', id: 'hosts-card', 'aria-labelledby': 'hosts-title' }),
      h('section', { class: 'card', id: 'events-card', 'aria-labelledby': 'events-title' })
    );
    shownVerdictKey = null;
  }

  function renderOpd(d) {
    skeleton();
    const L = t();
    const state = d.verdict ? d.verdict.state : null;
    $('head').replaceChildren(
      h('h1', { id: 'opd-name' }, d.opd.name),
      h('p', { class: 'muted small', id: 'identified' }, d.identified_by === 'address' ? L.byAddress(d.visitor_address || '') : L.byToken)
    );

    // Unreachable from here (twice in a row): from the office that is most
    // likely the office's own cable or router, whatever the last answer said.
    const offline = failingSince !== null && failures >= 2;
    const light = offline ? 'grey' : d.light;
    const checklist = offline ? 'offline' : d.checklist;
    const key = [lang, offline, state, d.since_local, d.reference, d.light, JSON.stringify(d.capacity_scaled || [])].join('|');
    if (key !== shownVerdictKey) {
      shownVerdictKey = key;
      const since = offline ? clock(failingSince.toISOString(), d.timezone, d.timezone_abbreviation, false) : null;
      const sentence = offline ? L.offlineSentence(since) : lang === 'id' ? d.sentence_id : d.sentence_en;
      $('verdict-card').replaceChildren(
        h('h2', { id: 'verdict-title' }, lang === 'id' ? 'Status sekarang' : 'Status now'),
        h('div', { class: 'verdict' },
          trafficLight(light, offline ? 'unreachable' : state, false),
          h('div', { class: 'verdict-text' },
            h('p', { class: 'state-label' }, badge(light, offline ? 'unreachable' : state, 'state-label')),
            h('p', { class: 'sentence', id: 'sentence' }, sentence),
            ...(d.capacity_scaled || []).map((c) => h('p', { class: 'small scaled' }, L.scaled(c))),
            !offline && d.since_local && !sentence.includes(d.since_local) ? h('p', { class: 'muted small' }, L.since(d.since_local)) : null,
            d.reference
              ? h('p', { id: 'reference' }, `${L.refLabel}: `, h('span', { class: 'ref', id: 'ref-code' }, d.reference), h('br'), h('span', { class: 'muted small' }, L.refHelp))
              : null,
            d.verdict ? evidence(d.verdict.evidence) : null))
      );
    }

    const steps = (L.steps[checklist] || []).slice();
    const top = checklist === 'saturated' ? topHost(d) : null;
    if (top) steps.splice(2, 0, L.topHostStep(top.who, top.pct, L.dirWord[top.dir]));
    // The code and the time never break across lines.
    const fill = (s) => s.split(/(\{ref\}|\{since\})/).map((part) => {
      if (part === '{ref}') return h('span', { class: 'ref nowrap' }, d.reference || '–');
      if (part === '{since}') return h('span', { class: 'nowrap' }, d.since_local || '–');
      return part;
    });
    $('todo').replaceChildren(
      h('h2', { id: 'todo-title' }, L.todo),
      h('ol', { class: 'steps', id: 'checklist', 'data-checklist': checklist },
        steps.map(([head, rest]) => h('li', {}, h('strong', {}, head), fill(rest))))
    );

    const dir = (name, u) => {
      const pct = u.ceiling_bps ? Math.min(100, (100 * u.rate.last_10s_bps) / u.ceiling_bps) : 0;
      const guar = u.ceiling_bps ? Math.min(100, (100 * u.guaranteed_bps) / u.ceiling_bps) : 0;
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = `${pct}%`;
      const mark = h('span', { class: 'bar-guar' });
      mark.style.left = `${guar}%`;
      return h('div', { class: 'rate' },
        h('div', { class: 'rate-head' }, h('strong', {}, name), h('span', {}, rate(u.rate.last_10s_bps))),
        h('div', { class: 'bar', 'aria-hidden': 'true' }, fill, mark),
        h('p', { class: 'muted small' }, L.allocation(rate(u.guaranteed_bps), rate(u.ceiling_bps))));
    };
    $('rates').replaceChildren(
      h('h2', { id: 'rates-title' }, L.now),
      dir(L.download, d.opd.download),
      dir(L.upload, d.opd.upload)
    );

    const vol = (v) => (v ? `↓ ${bytes(v.download_bytes)}  ↑ ${bytes(v.upload_bytes)}` : '–');
    $('volume').replaceChildren(
      h('h2', { id: 'volume-title' }, L.volume),
      d.opd.history_available
        ? h('dl', { class: 'vol' },
          h('dt', {}, L.today), h('dd', {}, vol(d.opd.today)),
          h('dt', {}, L.month), h('dd', {}, vol(d.opd.this_month)))
        : h('p', { class: 'muted' }, L.noHistory)
    );

    $('chart-card').replaceChildren(h('h2', { id: 'chart-title-h' }, L.chart), ...[].concat(chart(d)));
    $('hosts-card').replaceChildren(h('h2', { id: 'hosts-title' }, L.hostsTitle), ...[].concat(hostsTable(d)));

    const events = d.recent_events || [];
    $('events-card').replaceChildren(
      h('h2', { id: 'events-title' }, L.events),
      events.length
        ? h('ul', { class: 'events' }, events.map((e) => {
          const light = lightOf(e.state);
          return h('li', {},
            h('span', { class: 'muted' }, clock(e.at, d.timezone, d.timezone_abbreviation, false)), ' · ',
            e.opd ? L.you : L.network, ': ',
            badge(light, e.state, null), ' ',
            h('span', { class: 'ref small' }, e.reference));
        }))
        : h('p', { class: 'muted' }, L.noEvents)
    );
    document.body.dataset.state = state || 'none';
  }

  // A host as the page names it: its address, and its name if the policy
  // gives one.
  function who(host) {
    return host.name ? `${host.address} (${host.name})` : host.address;
  }

  // The host with the largest share of the direction nearest its ceiling.
  function topHost(d) {
    const th = d.top_hosts;
    if (!th || !th.hosts || !th.hosts.length) return null;
    const fill = (u) => (u.ceiling_bps ? u.rate.last_10s_bps / u.ceiling_bps : 0);
    const dir = fill(d.opd.download) >= fill(d.opd.upload) ? 'download' : 'upload';
    const share = (x) => (dir === 'download' ? x.download_share : x.upload_share);
    const best = th.hosts.reduce((a, x) => (share(x) > share(a) ? x : a), th.hosts[0]);
    if (!(share(best) > 0)) return null;
    return { who: who(best), pct: Math.round(100 * share(best)), dir };
  }

  function hostsTable(d) {
    const L = t();
    const th = d.top_hosts;
    if (!th) return h('p', { class: 'muted' }, L.hostsWait);
    if (!th.hosts.length) return h('p', { class: 'muted' }, L.hostsNone);
    const cell = (b, s) => [bytes(b), h('br'), `${Math.round(100 * s)}%`];
    return [
      h('table', { class: 'hosts', id: 'top-hosts' },
        h('thead', {}, h('tr', {}, L.hostCols.map((c, i) => h('th', { scope: 'col', class: i ? 'num' : null }, c)))),
        h('tbody', {}, th.hosts.map((x) => h('tr', { 'data-address': x.address },
          h('td', { class: 'addr' }, who(x)),
          h('td', { class: 'num' }, cell(x.download_bytes, x.download_share)),
          h('td', { class: 'num' }, cell(x.upload_bytes, x.upload_share)))))),
      h('p', { class: 'muted small' }, L.hostsActive(th.active_hosts)),
    ];
  }

  function lightOf(state) {
    switch (state) {
      case 'healthy':
      case 'idle':
        return 'green';
      case 'local_fault':
      case 'upstream_down':
        return 'red';
      case 'saturated':
      case 'local_degraded':
      case 'upstream_degraded':
        return 'yellow';
      default:
        return 'grey';
    }
  }

  function evidence(ev) {
    if (!ev || typeof ev !== 'object') return null;
    const rows = Object.entries(ev).map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v))]);
    if (!rows.length) return null;
    return h('details', {}, h('summary', {}, t().evidence), h('dl', { class: 'evidence' }, rows));
  }

  function chart(d) {
    const L = t();
    const u = d.usage_24h;
    if (!u || !u.points || !u.points.length) return h('p', { class: 'muted' }, L.noHistory);
    const pts = u.points.slice(-24);
    const W = 360;
    const H = 170;
    const left = 8;
    const top = 22;
    const bottom = 24;
    const plotH = H - top - bottom;
    const slot = (W - left * 2) / pts.length;
    const max = Math.max(1, ...pts.map((p) => Math.max(p.download_bytes, p.upload_bytes)));
    const totalD = pts.reduce((a, p) => a + p.download_bytes, 0);
    const totalU = pts.reduce((a, p) => a + p.upload_bytes, 0);
    const bars = [];
    pts.forEach((p, i) => {
      const x = left + i * slot;
      const bw = Math.max(1, slot / 2 - 1);
      const hd = (plotH * p.download_bytes) / max;
      const hu = (plotH * p.upload_bytes) / max;
      bars.push(h('rect', { class: 'dl', x: x.toFixed(1), y: (top + plotH - hd).toFixed(1), width: bw.toFixed(1), height: hd.toFixed(1) }));
      bars.push(h('rect', { class: 'ul', x: (x + bw + 0.5).toFixed(1), y: (top + plotH - hu).toFixed(1), width: bw.toFixed(1), height: hu.toFixed(1) }));
      if (i % 6 === 0) {
        bars.push(h('text', { class: 'axis', x: x.toFixed(1), y: H - 6 }, `${hourOf(p.start, d.timezone)}:00`));
      }
    });
    return [
      h('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-t chart-d' },
        h('title', { id: 'chart-t' }, L.chart),
        h('desc', { id: 'chart-d' }, L.chartDesc(bytes(totalD), bytes(totalU))),
        h('defs', {},
          h('pattern', { id: 'hatch', width: 5, height: 5, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
            h('rect', { width: 5, height: 5, fill: '#ffffff' }),
            h('rect', { width: 2, height: 5, fill: '#8a4b00' }))),
        h('line', { class: 'grid', x1: left, x2: W - left, y1: top, y2: top }),
        h('line', { class: 'grid', x1: left, x2: W - left, y1: top + plotH, y2: top + plotH }),
        h('text', { class: 'axis', x: left, y: top - 8 }, `${bytes(max)} ${L.perHour}`),
        bars),
      h('ul', { class: 'legend' },
        h('li', {}, h('span', { class: 'key dl', 'aria-hidden': 'true' }), `${L.download}: ${bytes(totalD)}`),
        h('li', {}, h('span', { class: 'key ul', 'aria-hidden': 'true' }), `${L.upload}: ${bytes(totalU)}`)),
    ];
  }

  // ---- every OPD (admin) ----

  function adminSkeleton() {
    const main = $('main');
    if (main.dataset.view === 'admin') return;
    main.dataset.view = 'admin';
    main.className = 'admin';
    main.replaceChildren(
      h('section', { class: 'card', id: 'gw-card', 'aria-labelledby': 'gw-title' }),
      h('section', { class: 'card', id: 'lookup-card', 'aria-labelledby': 'lookup-title' }),
      h('section', { id: 'grid-card', 'aria-labelledby': 'grid-title' })
    );
    renderLookup();
  }

  function renderLookup(result) {
    const L = t();
    const input = h('input', { id: 'ref-input', name: 'code', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'XXXX-XXXX', maxlength: 20 });
    const old = $('ref-input');
    if (old) input.value = old.value;
    const form = h('form', { class: 'lookup', id: 'lookup', onsubmit: lookup },
      h('label', { for: 'ref-input' }, L.lookupLabel), input, h('button', { type: 'submit', class: 'btn' }, L.lookupButton));
    $('lookup-card').replaceChildren(h('h2', { id: 'lookup-title' }, L.lookupTitle), form, h('div', { id: 'lookup-result', 'aria-live': 'polite' }, result || null));
  }

  async function lookup(ev) {
    ev.preventDefault();
    const code = ($('ref-input').value || '').trim();
    if (!code) return;
    const out = $('lookup-result');
    try {
      const r = await call(`/api/v1/references/${encodeURIComponent(code)}`);
      if (!r.ok) {
        out.replaceChildren(h('p', {}, r.status === 404 ? t().lookupNone : (r.body && r.body.detail) || `HTTP ${r.status}`));
        return;
      }
      const tz = last ? last.timezone : undefined;
      const abbr = last ? last.timezone_abbreviation : '';
      out.replaceChildren(h('ul', { class: 'events', id: 'lookup-matches' }, r.body.matches.map((m) =>
        h('li', {},
          h('span', { class: 'ref' }, m.reference), ' · ', m.opd_name || t().network, ' · ',
          badge(lightOf(m.state), m.state, null), ' · ', clock(m.at, tz, abbr, false), ' · ',
          m.current ? t().lookupCurrent : t().lookupPast,
          h('br'), h('span', { class: 'muted small' }, lang === 'id' ? m.explanation_id : m.explanation_en)))));
    } catch (e) {
      out.replaceChildren(h('p', {}, t().errorTitle));
    }
  }

  function renderAdmin(d) {
    adminSkeleton();
    const L = t();
    const g = d.gateway;
    $('gw-card').replaceChildren(
      h('h1', { id: 'gw-title' }, L.gatewayTitle),
      h('div', { class: 'verdict' },
        trafficLight(d.gateway_light, g ? g.state : null, false),
        h('div', { class: 'verdict-text' },
          h('p', {}, badge(d.gateway_light, g ? g.state : null, 'state-label')),
          h('p', { class: 'sentence', id: 'sentence' }, g ? (lang === 'id' ? d.gateway_sentence_id || g.explanation_id : d.gateway_sentence_en || g.explanation_en) : L.states.none),
          ...(d.capacity_scaled || []).map((c) => h('p', { class: 'small scaled' }, L.scaled(c)))))
    );
    $('grid-card').replaceChildren(
      h('h2', { id: 'grid-title' }, `${L.brandAdmin} (${d.opds.length})`),
      h('ul', { class: 'tiles', id: 'tiles' }, d.opds.map((o) => {
        const href = `/status?opd=${encodeURIComponent(o.id)}#token=${encodeURIComponent(token || '')}&lang=${lang}`;
        return h('li', { class: 'card tile', 'data-opd': o.id, 'data-state': o.state || 'none' },
          trafficLight(o.light, o.state, true),
          h('div', {},
            h('h2', {}, h('a', { href, 'aria-label': L.openPage(o.name) }, o.name)),
            h('p', {}, badge(o.light, o.state, null)),
            h('p', { class: 'small' }, `↓ ${mbit(o.download.rate.last_10s_bps)} / ${rate(o.download.ceiling_bps)}`, h('br'),
              `↑ ${mbit(o.upload.rate.last_10s_bps)} / ${rate(o.upload.ceiling_bps)}`),
            o.uplink_figure_en ? h('p', { class: 'small tile-figure' }, lang === 'id' ? o.uplink_figure_id : o.uplink_figure_en) : null,
            o.since_local && !o.uplink_figure_en ? h('p', { class: 'muted small' }, L.since(o.since_local)) : null,
            o.reference ? h('p', { class: 'small' }, `${L.refLabel}: `, h('span', { class: 'ref' }, o.reference)) : null));
      }))
    );
  }

  // ---- polling ----

  async function poll() {
    let path;
    if (admin) {
      if (!token) {
        showMessage(t().badTokenTitle, t().adminNeedsToken);
        return;
      }
      path = '/api/v1/status/overview';
    } else {
      path = `/api/v1/status${wantedOpd ? `?opd=${encodeURIComponent(wantedOpd)}` : ''}`;
    }
    try {
      const r = await call(path);
      if (r.ok && r.body) {
        last = r.body;
        lastProblem = null;
        lastAt = new Date();
        failingSince = null;
        failures = 0;
        setOffline(false);
        render();
      } else if (r.status === 400 && !admin && token && !wantedOpd) {
        // An admin token on /status: the overview is the admin's page.
        location.replace(`/status/admin${location.hash}`);
        return;
      } else {
        last = null;
        lastProblem = r;
        failingSince = null;
        setOffline(false);
        $('main').dataset.view = 'message';
        showProblem(r);
      }
    } catch (e) {
      if (!failingSince) failingSince = new Date();
      failures += 1;
      if (failures >= 2) render();
    }
    setTimeout(poll, POLL_MS);
  }

  function render() {
    setChrome();
    if (last) {
      if (admin) renderAdmin(last);
      else renderOpd(last);
      setUpdated();
    }
    setOffline(failingSince !== null && failures >= 2);
  }

  function start() {
    setChrome();
    $('lang').addEventListener('click', () => {
      lang = lang === 'id' ? 'en' : 'id';
      try {
        localStorage.setItem('jatah-lang', lang);
      } catch (e) {
        /* not kept; fine */
      }
      shownVerdictKey = null;
      if (admin && $('lookup-card')) renderLookup();
      render();
      if (lastProblem) showProblem(lastProblem);
      else if ($('loading')) $('loading').textContent = t().loading;
    });
    const loading = $('loading');
    if (loading) loading.textContent = t().loading;
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
