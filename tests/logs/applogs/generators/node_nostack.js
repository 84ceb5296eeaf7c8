// Node 20: errors printed without a stack, and unhandled rejections under --unhandled-rejections=warn.
// node node_nostack.js N KIND (KIND: deleted, deletedcode, deletedprops, reject, rejectcause, rejectstr, rejectnostack, rejectobj, rejectmany)
const id = Number(process.argv[2] || 1);
const kind = process.argv[3];
// an uncaught error whose stack was deleted: Node prints it in brackets, `[TypeError: …]`, after the caret
if (kind === 'deleted') { const e = new TypeError(`order ${id} has no total`); delete e.stack; throw e; }
if (kind === 'deletedcode') { const e = new Error(`upstream ${id} refused`); e.code = 'E_UPSTREAM'; delete e.stack; throw e; }
if (kind === 'deletedprops') {
  const e = new Error(`upstream ${id} refused`, { cause: new RangeError(`port ${id} out of range`) });
  Object.assign(e, { code: 'E_UPSTREAM', upstream: 'payments.internal.example', retry: { after: 30, attempts: 3 } });
  delete e.stack; throw e;
}
// unhandled rejections (run with --unhandled-rejections=warn: `(node:PID) UnhandledPromiseRejectionWarning: …`)
if (kind === 'reject') Promise.reject(new RangeError(`bad offset ${id}`));
if (kind === 'rejectcause') Promise.reject(new Error(`charge ${id} failed`, { cause: new TypeError(`card ${id} expired`) }));
if (kind === 'rejectstr') Promise.reject(`oops ${id}`);
if (kind === 'rejectnostack') { const e = new Error(`lost ${id}`); delete e.stack; Promise.reject(e); }
if (kind === 'rejectobj') Promise.reject({ code: 42, id });
if (kind === 'rejectmany') { Promise.reject(new Error(`first ${id}`)); Promise.reject(new Error(`second ${id}`)); }
