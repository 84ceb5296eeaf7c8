const id = Number(process.argv[2] || 1);
const kind = process.argv[3];
function load(o) { return o.user.id; }
if (kind === 'type') load({});
if (kind === 'error') throw new Error(`order ${id} not found`);
if (kind === 'reject') Promise.reject('oops ' + id);
if (kind === 'rejecterr') (async () => { throw new RangeError(`bad offset ${id}`); })();
if (kind === 'net') require('net').connect(1, '127.0.0.1');
if (kind === 'custom') { class DbError extends Error { constructor(m) { super(m); this.name = 'DbError'; this.code = 'E42'; } } throw new DbError(`query failed for tenant ${id}`); }
if (kind === 'console') { try { load({}); } catch (e) { console.error(e); console.error('request failed', e); } }
if (kind === 'json') JSON.parse('{bad' + id);
