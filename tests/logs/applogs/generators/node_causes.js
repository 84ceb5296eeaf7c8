const pino = require('pino')();
const bunyan = require('bunyan').createLogger({name: 'app', serializers: require('bunyan').stdSerializers});
const VError = require('verror');
class DbError extends Error { constructor(m, o) { super(m, o); this.name = 'DbError'; } }
function load(i) { throw new DbError(`connect ECONNREFUSED 10.0.0.${i}:5432`); }
function handle(i) {
  try { load(i); } catch (e) { throw new Error(`request ${i} failed`, {cause: e}); }
}
for (const i of [1, 2]) {
  try { handle(i); } catch (e) { pino.error(e, 'request failed'); bunyan.error({err: e}, 'request failed'); }
  try { try { load(i); } catch (e) { throw new VError(e, 'order %d failed', i); } }
  catch (e) { bunyan.error({err: e}, 'order failed'); pino.error({err: e}, 'order failed'); }
}
