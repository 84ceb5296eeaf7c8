const pino = require('pino')();
const id = Date.now() % 1000;
function load(o) { return o.user.id; }
try { load({}); } catch (e) { console.error(e); pino.error({ err: e, order: id }, `order ${id} failed`); }
const err = new Error(`connect ECONNREFUSED 10.0.0.${id % 250}:5432`); err.code = 'ECONNREFUSED';
pino.error(err);
console.log('started worker ' + id);
setTimeout(() => { Promise.reject(new RangeError(`offset ${id} out of range`)); }, 50);
