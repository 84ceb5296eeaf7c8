// Node errors upkeeper must read: messages of several lines before the frames, errors whose name does not end in
// Error/Exception, and a name in brackets after the class. Usage: node node_named.js N KIND (stderr holds the output)
const n = +process.argv[2], kind = process.argv[3];
class PaymentDeclined extends Error {
  constructor(m) { super(m); this.name = 'PaymentDeclined'; this.code = 'card_declined'; }
}
class Timeout extends Error {}  // no name of its own: printed as "Timeout [Error]: …"
if (kind === 'multi') {
  console.error(new Error(`query ${n} failed\nDETAIL: key ${n}\nHINT: retry`));
  console.error('job failed', new TypeError(`bad ${n}\nline two`));
  throw new RangeError(`uncaught ${n}\nsecond ${n}`);
}
if (kind === 'named') {
  console.error('payment failed', new PaymentDeclined(`card declined for order ${n}`));
  console.error('sync failed', new Timeout(`timed out after ${n} ms`));
  const ac = new AbortController();
  ac.abort();
  console.error('fetch aborted', ac.signal.reason);
  console.error(new PaymentDeclined(`card declined for order ${n}`));
  throw new PaymentDeclined(`card declined for order ${n}`);
}
if (kind === 'dom') {
  const ac = new AbortController();
  ac.abort();
  ac.signal.throwIfAborted();
}
