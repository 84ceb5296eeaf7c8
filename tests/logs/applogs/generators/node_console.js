// console.error(message, err) and console.error(err) as Node 20 prints them (util.format, util.inspect): usage: node node_console.js N KIND
const net = require('net');
const fs = require('fs');
const id = Number(process.argv[2] || 1);
const kind = process.argv[3];
class CardError extends Error {
  constructor(m, code) { super(m); this.name = 'CardError'; this.code = code; this.declineCode = 'insufficient_funds'; }
}
function charge(order) { if (!order.card) throw new CardError(`card declined for order ${order.id}`, 'card_declined'); }
function load(o) { return o.user.id; }
if (kind === 'msg') {
  try { load({}); } catch (e) { console.error('payment failed', e); }
  try { charge({ id: 100 + id }); } catch (e) { console.error('payment failed:', e); }
  try { throw new Error(`order ${id} not found`); } catch (e) { console.error(`[order ${id}] lookup failed`, e); }
  try { fs.readFileSync(undefined); } catch (e) { console.error('config read failed', e); }
  try { throw new Error('upstream timeout', { cause: new RangeError(`offset ${id} out of range`) }); } catch (e) { console.error('sync failed', e); }
}
if (kind === 'plain') {
  try { fs.readFileSync(undefined); } catch (e) { console.error(e); }
  try { charge({ id: 100 + id }); } catch (e) { console.error(e); }
}
if (kind === 'net') {
  net.connect(1, '127.0.0.1').on('error', (e) => { console.error(e); console.error('db connect failed', e); });
}
