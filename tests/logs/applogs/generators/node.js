const pino = require('pino');
const bunyan = require('bunyan');
const winston = require('winston');
function fail(id) { const e = new TypeError(`Cannot read properties of undefined (reading 'id') for order ${id}`); return e; }
class DbError extends Error { constructor(m){ super(m); this.name='DbError'; } }
const p = pino();
p.info('server started');
p.warn({port: 3000}, 'slow request 1234 ms');
p.error(fail(17), 'request failed');
p.error({err: new DbError('connect ECONNREFUSED 10.0.0.5:5432')}, 'db down');
p.fatal(new Error('out of memory'));
const b = bunyan.createLogger({name: 'app'});
b.info('hi');
b.error(fail(18), 'request failed');
b.error({err: new DbError('connect ECONNREFUSED 10.0.0.6:5432')}, 'db down');
b.warn('disk 91% full');
const w = winston.createLogger({format: winston.format.combine(winston.format.errors({stack: true}), winston.format.json()), transports: [new winston.transports.Console()]});
w.info('hello');
w.error(fail(19));
w.error('db down', new DbError('connect ECONNREFUSED 10.0.0.7:5432'));
w.warn('slow');
const w2 = winston.createLogger({format: winston.format.combine(winston.format.timestamp(), winston.format.errors({stack: true}), winston.format.json()), transports: [new winston.transports.Console()]});
w2.error('failed to charge', {error: new DbError('card declined 4242')});
w2.log({level:'error', message: fail(20)});
