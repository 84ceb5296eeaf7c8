// Node error chains: Error.cause (Node >= 16.9) and AggregateError, as console.error and as an uncaught crash
const id = Number(process.argv[2] || 1);
const kind = process.argv[3];
class DbError extends Error { constructor(m, o) { super(m, o); this.name = 'DbError'; } }
function query(t) { throw new DbError(`connect ECONNREFUSED 10.0.0.${t}:5432`); }
function load(t) { try { query(t); } catch (e) { throw new Error(`loading tenant ${t} failed`, { cause: e }); } }
function handle(t) { try { load(t); } catch (e) { throw new Error(`request ${t} failed`, { cause: e }); } }
function parse(t) { try { JSON.parse('{bad' + t); } catch (e) { throw new Error(`request ${t} failed`, { cause: e }); } }
if (kind === 'cause') { try { handle(id); } catch (e) { console.error(e); } }
if (kind === 'cause2') { try { parse(id); } catch (e) { console.error(e); } }
if (kind === 'causestr') { try { throw new Error(`job ${id} failed`, { cause: 'timeout' }); } catch (e) { console.error(e); } }
if (kind === 'uncaught') handle(id);
if (kind === 'aggregate') {
  Promise.any([Promise.reject(new TypeError(`bad input ${id}`)), Promise.reject(new RangeError(`offset ${id} out of range`))])
    .catch((e) => console.error(e));
}
if (kind === 'aggregate2') { throw new AggregateError([new DbError(`replica ${id} down`), new Error('timeout')], `all ${id} replicas failed`); }
