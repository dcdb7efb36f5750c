// `json` (the engine's JSON.stringify, floats and bigints marked and replaced) writes what
// `walked` (the plain walk it replaced) writes, whatever the value: run by the test suite, or
// `node sdk/json.test.mjs`.
import { Float, json, walked } from './json.mjs';

const cases = [
  1, 1.5, -0, null, undefined, true, 'a"b\\c', '\u2028', '\u0000refold:number:5', [], {}, [[[]]],
  [1, undefined, new Float(2)],
  { a: undefined, b: new Float(3), c: [new Float(1e21), new Float(0.1)], d: { $date: 'x' } },
  new Float(100), new Float(NaN), new Float(-0), new Float(Infinity),
  12345678901234567890n, { x: 5n, y: [6n, new Float(7)] },
  { date: new Date(0) }, { f() {} }, { s: Symbol('x') }, { n: NaN },
  { 2: 1, a: 2, 1: 3 },
  new Number(5), { n: new String('ab'), b: new Boolean(false) }, [, 1], { t: { toJSON() {} } },
  Object.assign([1, 2], { extra: 3 }), NaN, { n: [NaN, Infinity] },
  { mark: '\u0000refold:number:7', f: new Float(1) },
  { $set: { amount: new Float(12), currency: 'EUR', at: { $date: '2025-01-01T00:00:00.000Z' } }, $inc: { n: 1 } },
];
let failed = 0;
for (const value of cases) {
  const fast = json(value);
  const reference = walked(value);
  if (fast !== reference) {
    failed++;
    console.error(`differs: ${reference} written as ${fast}`);
  }
}
const expected = '{"$set":{"amount":12.0,"n":1},"$inc":{"big":12345678901234567890}}';
const written = json({ $set: { amount: new Float(12), n: 1 }, $inc: { big: 12345678901234567890n } });
if (written !== expected) {
  failed++;
  console.error(`expected ${expected}, got ${written}`);
}
if (failed) {
  process.exit(1);
}
console.log(`json: ${cases.length + 1} cases written alike`);
