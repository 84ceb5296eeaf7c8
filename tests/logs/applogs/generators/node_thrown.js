// Node 20's report of an uncaught throw of a value that is no Error (under the place, its code and the caret, with no
// blank line between, unlike an Error's stack), next to an Error's, a worker's and one of code run by -e:
//   node node_thrown.js N KIND
const id = Number(process.argv[2] || 1);
const kind = process.argv[3];
if (kind === 'string') throw `payment ${id} declined`;
if (kind === 'object') throw { code: 42, order: id };
if (kind === 'bigobject') throw { code: 'E_PAYMENT_DECLINED', order: id, customer: { id: id * 7, email: `c${id}@example.org` }, retry: false };
if (kind === 'timer') setTimeout(() => { throw `timer ${id} expired`; }, 1);
if (kind === 'error') setTimeout(() => { const o = {}; o.user.name; }, 1);
if (kind === 'worker') { const { Worker } = require('worker_threads'); new Worker(`throw new TypeError('worker ${id} failed')`, { eval: true }); }
if (kind === 'oom') { const a = []; for (;;) a.push(new Array(100000).fill(id)); }
